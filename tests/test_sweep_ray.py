"""Sweeps on Ray: trials as Ray tasks on a real local Ray (started once, with 2 CPUs)."""

from __future__ import annotations

import _thread
import os
import textwrap
import threading
import time
from pathlib import Path

import pytest
import ray
from conftest import make_store

from pcs import Component, LocalRepo, Run, SweepRun, _keys

REPO_ROOT = Path(__file__).resolve().parent.parent

SOURCE = '''
import random
import time


class Trainer:
    def fit(self, lr=0.1, fail_on=None, sleep=0.0):
        from pcs import active_component_run

        run = active_component_run(self)
        if fail_on is not None and lr == fail_on:
            raise ValueError(f"lr {lr} diverges")
        deadline = time.time() + sleep
        while time.time() < deadline:
            time.sleep(0.05)
        score = lr * random.random()
        run.log_metric("score", score)
        return score
'''

LR = "trainer.fit.lr"


@pytest.fixture()
def trainer(tmp_path, local_ray) -> Component:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "trainer.py").write_text(textwrap.dedent(SOURCE))
    return Component.from_repo(LocalRepo("src", folder), "trainer", "trainer.py", "Trainer",
                               instantiate=True)


def test_trials_run_as_ray_tasks_and_a_failing_one_fails_alone(trainer):
    serial = SweepRun.from_component(trainer, "fit", grid={LR: [0.1, 0.2, 0.3]}, seeds=[1, 2],
                                     executor="serial", arg_set={"trainer": {"fit": {"fail_on": 0.2}}})
    on_ray = SweepRun.from_component(trainer, "fit", grid={LR: [0.1, 0.2, 0.3]}, seeds=[1, 2],
                                     executor="ray", arg_set={"trainer": {"fit": {"fail_on": 0.2}}})

    assert ray.is_initialized()  # the sweep used the Ray it found, and left it running
    assert on_ray.status == "FINISHED"
    statuses = [t.status for t in on_ray.trials]
    assert statuses == ["FINISHED", "FINISHED", "FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert on_ray.trials[2].tags[_keys.ERROR] == "ValueError: lr 0.2 diverges"
    assert str(os.getpid()) not in {t.tags[_keys.PID] for t in on_ray.trials}
    assert [t.tags[_keys.SWEEP_ID] for t in on_ray.trials] == [on_ray.identifier] * 6
    # where each trial ran: the Ray node (address and id) and the host
    node_id = ray.get_runtime_context().get_node_id()
    assert {t.tags[_keys.RAY_NODE].split()[1] for t in on_ray.trials} == {node_id}
    assert all(t.tags[_keys.HOST] for t in on_ray.trials)
    finished = [i for i, s in enumerate(statuses) if s == "FINISHED"]
    assert [on_ray.trials[i].return_value for i in finished] == [
        serial.trials[i].return_value for i in finished
    ]


def test_workers_write_to_the_callers_tracking_uri(trainer, tmp_path, template_store):
    import mlflow

    env_store = os.environ["MLFLOW_TRACKING_URI"]
    other = make_store(Path.cwd() / "elsewhere", template_store)
    mlflow.set_tracking_uri("sqlite:///elsewhere/mlflow.db")  # relative to this folder
    assert other.endswith("elsewhere/mlflow.db")

    sweep = SweepRun.from_component(trainer, "fit", grid={LR: [0.1, 0.2]}, seeds=[1],
                                    executor="ray")

    assert [t.status for t in sweep.trials] == ["FINISHED", "FINISHED"]
    assert {r.identifier for r in Run.get_all_runs()} == {
        sweep.identifier, *(t.identifier for t in sweep.trials)
    }
    mlflow.set_tracking_uri(env_store)
    assert Run.get_all_runs() == []  # nothing went to the store in the environment


def test_a_ray_sweep_reruns_on_ray_and_verifies(trainer):
    # each trial asks for both CPUs of the cluster: Ray runs them one at a time
    sweep = SweepRun.from_component(trainer, "fit", grid={LR: [0.1, 0.2]}, seeds=[1, 2],
                                    executor="ray", max_workers=2, resources={"cpus": 2})
    spans = sorted((t.info.start_time, t.info.end_time) for t in sweep.trials)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))

    again = Run.from_existing_run_id(sweep.identifier).rerun(verify=True)

    assert again.spec.executor == "ray"
    assert again.verification.verdict == "reproduced"
    assert all(str(os.getpid()) != t.tags[_keys.PID] for t in again.trials)


@pytest.mark.parametrize("kind", ["grid", "pruned search"])
def test_ctrl_c_cancels_the_ray_tasks_and_ends_everything_killed(trainer, kind):
    plan = {"grid": {LR: [0.1, 0.2, 0.3]}, "seeds": [1]} if kind == "grid" else {
        "space": {LR: [0.1, 0.2, 0.3]}, "search": "grid", "metric": "score", "mode": "max",
        "prune": "median"}

    def interrupt_when_running() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            running = [r for r in Run.get_all_runs()
                       if _keys.TRIAL in r.tags and r.status == "RUNNING"]
            if len(running) >= 2:
                _thread.interrupt_main()  # what Ctrl-C does to the main thread
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=interrupt_when_running, daemon=True)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        SweepRun.from_component(trainer, "fit", executor="ray",
                                arg_set={"trainer": {"fit": {"sleep": 120}}}, **plan)
    watcher.join(timeout=5)
    # a pruning search stopped listening for its trials' reports too
    assert not [t for t in threading.enumerate() if t.name == "pcs-sweep-reports"]

    runs = Run.get_all_runs()
    sweep = [r for r in runs if r.tags.get(_keys.RUN_TYPE) == "sweep"][0]
    trials = [r for r in runs if _keys.TRIAL in r.tags]
    assert sweep.status == "KILLED" and sweep.tags[_keys.ENDED_BY] == "SIGINT"
    assert len(trials) >= 2 and all(t.status == "KILLED" for t in trials)
    assert not [r for r in runs if r.status == "RUNNING"]


RAY_CHILD = '''
import sys
import ray
from pcs import Component, LocalRepo, SweepRun

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
trainer = Component.from_repo(LocalRepo("src", sys.argv[1]), "trainer", "trainer.py", "Trainer",
                              instantiate=True)
SweepRun.from_component(trainer, "fit", grid={"trainer.fit.lr": [0.1]}, seeds=[1],
                        executor="ray", arg_set={"trainer": {"fit": {"sleep": 120}}})
'''


def test_sigterm_to_a_ray_driver_ends_its_trials_by_that_name_and_kills_it_by_the_signal(
    trainer, tmp_path
):
    import signal
    import subprocess
    import sys

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    child = subprocess.Popen([sys.executable, "-c", RAY_CHILD, str(tmp_path / "src")], env=env,
                             cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not [
            r for r in Run.get_all_runs() if _keys.TRIAL in r.tags and r.status == "RUNNING"
        ]:
            time.sleep(0.3)
        os.kill(child.pid, signal.SIGTERM)
        child.wait(timeout=90)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    stderr = child.stderr.read()
    assert child.returncode == -signal.SIGTERM, stderr[-2000:]
    runs = Run.get_all_runs()
    trials = [r for r in runs if _keys.TRIAL in r.tags]
    assert trials and all(t.status == "KILLED" for t in trials)
    assert {t.tags[_keys.ENDED_BY] for t in trials} == {"SIGTERM"}
    assert not [r for r in runs if r.status == "RUNNING"]
