"""Sweeps: one record for many trials; table, best, rerun + verify, resume, CLI, transfer.

Trials are real component runs of a small file written per test, on the
test's own SQLite store; the ``process`` executor starts real worker
processes. Faults (signals, crashes, SQLite contention) are in
test_sweep_faults.py, Ray in test_sweep_ray.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import textwrap
from pathlib import Path

import pytest
from conftest import make_store, run_cli

from pcs import Component, ComponentRun, LocalRepo, Run, SweepRun, _keys
from pcs._features import feature
from pcs._keys import SWEEP_SPEC_ARTIFACT as SPEC_ARTIFACT
from pcs._keys import SWEEP_SUMMARY as SUMMARY_TAG
from pcs.errors import ArgumentError, NotReproducibleError, PcsError
from pcs.sweep import SweepVerification
from pcs.sweep._worker import Shared, Task, TrialContext, run_trial
from pcs.sweep.record import commands_registry, commands_text
from pcs.sweep.spec import plan_sweep

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

TRAINER = '''
import os
import random


class Trainer:
    """A stand-in for training: a score that depends on lr, epochs and the seed."""

    def fit(self, lr=0.1, epochs=2, fail_on=None, noisy_on=None, exit_on=None, fail_listed=None,
            inner=False):
        from pcs import active_component_run

        run = active_component_run(self)
        if inner:
            import mlflow

            with mlflow.start_run(nested=True, run_name="inner"):
                mlflow.log_metric("inner", lr)
        if fail_on is not None and lr == fail_on:
            raise ValueError(f"lr {lr} diverges")
        if fail_listed and os.path.exists(fail_listed):
            with open(fail_listed) as fh:
                if str(lr) in fh.read().split():
                    raise RuntimeError(f"{fail_listed} says lr {lr} fails")
        if exit_on is not None and lr == exit_on:
            os._exit(3)
        score = 0.0
        for epoch in range(epochs):
            score += lr * random.random()
            if noisy_on is not None and lr == noisy_on:
                score += random.SystemRandom().random()  # randomness pcs does not seed
            run.log_metric("score", score, step=epoch)
        run.log_metric("final", round(score, 9))
        return round(score, 9)
'''

COMPONENTS_YAML = """
repos:
  src:
    type: local
    path: .
components:
  trainer:
    repo: src
    file_path: trainer.py
    class_name: Trainer
    instantiate: true
"""

LR = "trainer.fit.lr"


@pytest.fixture()
def project(tmp_path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "trainer.py").write_text(textwrap.dedent(TRAINER))
    (folder / "components.yaml").write_text(COMPONENTS_YAML)
    return folder


@pytest.fixture()
def trainer(project) -> Component:
    return Component.from_repo(LocalRepo("src", project), "trainer", "trainer.py", "Trainer",
                               instantiate=True)


def plotted_points(svg: str) -> dict[str, int]:
    """Points per scatter group of a sweep plot (each point is one <use> of the marker)."""
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(svg)
    return {
        g.get("id"): len(g.findall(f".//{ns}use"))
        for g in root.iter(f"{ns}g") if (g.get("id") or "").startswith("pcs-trials-")
    }


def all_runs() -> list[Run]:
    return Run.get_all_runs()


def sweep_serial(trainer, **kwargs) -> SweepRun:
    kwargs.setdefault("grid", {LR: [0.1, 0.2]})
    kwargs.setdefault("seeds", [1, 2])
    return SweepRun.from_component(trainer, "fit", executor="serial", **kwargs)


# -- the record ---------------------------------------------------------------------------------


def test_grid_times_seeds_makes_one_nested_tagged_trial_each(trainer):
    sweep = sweep_serial(trainer, grid={LR: [0.1, 0.2, 0.3]}, seeds=[7, 8])

    assert sweep.status == "FINISHED"
    assert sweep.tags[_keys.SWEEP_ID] == sweep.identifier
    assert sweep.tags[_keys.RUN_TYPE] == "sweep"
    loaded = Run.from_existing_run_id(sweep.identifier)
    assert isinstance(loaded, SweepRun)
    trials = loaded.trials
    assert len(trials) == 6
    assert all(isinstance(t, ComponentRun) for t in trials)
    expected = [(lr, seed) for lr in (0.1, 0.2, 0.3) for seed in (7, 8)]
    for index, (trial, (lr, seed)) in enumerate(zip(trials, expected, strict=True)):
        assert trial.status == "FINISHED"
        assert trial.tags[_keys.SWEEP_ID] == sweep.identifier
        assert trial.tags[_keys.TRIAL] == str(index)
        assert trial.tags[_keys.PARENT_RUN_ID] == sweep.identifier
        assert trial.seed == seed
        assert trial.params[LR] == str(lr)
        assert trial.params[_keys.SEED_PARAM] == str(seed)
        assert trial.run_command.argument_set.get_function_args("trainer", "fit") == {"lr": lr}
    # the spec, the commands and the sources are recorded with the sweep
    artifacts = set(sweep.artifact_paths())
    assert {SPEC_ARTIFACT, "pcs/sweep_commands.yaml", "pcs/sweep.csv"} <= artifacts
    assert any(p.startswith("pcs/source/") for p in artifacts)
    assert sweep.spec.seeds == [7, 8]
    assert [t.run_command for t in sweep.spec.trials] == [t.tags[_keys.RUN_COMMAND_ID] for t in trials]
    assert sweep.params[f"grid.{LR}"] == "[0.1, 0.2, 0.3]"


def test_drawn_seeds_are_recorded_and_component_sweep_feature_is_registered(trainer):
    sweep = feature("sweep")(trainer, "fit", grid={LR: [0.1, 0.2]}, executor="serial")

    assert isinstance(sweep, SweepRun)
    seeds = [t.seed for t in sweep.trials]
    assert [t.seed for t in sweep.spec.trials] == seeds
    assert [row["seed"] for row in sweep.table()] == seeds


def test_samples_draw_distinct_combinations_with_a_recorded_seed(trainer):
    grid = {LR: [0.1, 0.2, 0.3], "trainer.fit.epochs": [1, 2, 3]}
    spec_a, _ = plan_sweep(trainer, "fit", None, grid, 4, [1], "serial", None, sample_seed=11)
    spec_b, _ = plan_sweep(trainer, "fit", None, grid, 4, [1], "serial", None, sample_seed=11)
    combos = [tuple(sorted(t.args.items())) for t in spec_a.trials]
    assert len(set(combos)) == 4
    assert combos == [tuple(sorted(t.args.items())) for t in spec_b.trials]
    all_combos = {((("trainer.fit.epochs", e), (LR, lr))) for lr in grid[LR] for e in (1, 2, 3)}
    assert set(combos) <= all_combos

    sweep = sweep_serial(trainer, grid=grid, samples=2, seeds=[1, 2])

    assert len(sweep.trials) == 4
    assert isinstance(sweep.spec.sample_seed, int)
    again, _ = plan_sweep(trainer, "fit", None, grid, 2, [1], "serial", None,
                          sample_seed=sweep.spec.sample_seed)
    assert [t.args for t in again.trials] == [t.args for t in sweep.spec.trials[::2]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid": {"trainer.fit": [1]}}, "COMPONENT.FUNCTION.ARG"),
        ({"grid": {"trainer.fit.lrr": [1]}}, "Did you mean trainer.fit.lr"),
        ({"grid": {"other.fit.lr": [1]}}, "not part of"),
        ({"grid": {LR: []}}, "no values"),
        ({"grid": {LR: "0.1,0.2"}}, "must be a list"),
        ({"grid": {LR: [0.1, 0.1]}}, "twice"),
        ({"grid": {LR: [object()]}}, "cannot record"),
        ({"grid": {LR: [0.1]}, "samples": 2}, "more combinations"),
        ({"samples": 2}, "no grid"),
        ({"grid": {LR: [0.1]}, "seeds": []}, "non-empty"),
        ({"grid": {LR: [0.1]}, "seeds": [1, 1]}, "twice"),
        ({"grid": {LR: [0.1]}, "seeds": [-1]}, "whole number"),
        ({"grid": {LR: [0.1]}, "executor": "threads"}, "Unknown sweep executor"),
        ({"grid": {LR: [0.1]}, "max_workers": 0}, "max_workers"),
    ],
)
def test_bad_sweeps_are_refused_before_anything_is_recorded(trainer, kwargs, message):
    kwargs.setdefault("executor", "serial")
    with pytest.raises(ArgumentError, match=message):
        SweepRun.from_component(trainer, "fit", **kwargs)
    assert all_runs() == []


# -- results ------------------------------------------------------------------------------------


def test_table_best_csv_and_plot(trainer):
    sweep = sweep_serial(trainer, grid={LR: [0.1, 0.2, 0.3]}, seeds=[1, 2], plot_metric="final")

    rows = sweep.table()
    assert [r["trial"] for r in rows] == list(range(6))
    assert list(rows[0]) == ["trial", "run_id", "status", "seed", LR, "final", "score"]
    for row, trial in zip(rows, sweep.trials, strict=True):
        assert row["run_id"] == trial.identifier
        assert row["status"] == "FINISHED"
        assert row["final"] == trial.return_value
        assert row["score"] == pytest.approx(trial.metric_history("score")[-1].value)
    best = sweep.best("final")
    assert best.return_value == max(r["final"] for r in rows)
    assert sweep.best("final", mode="min").return_value == min(r["final"] for r in rows)
    with pytest.raises(ArgumentError, match="mode"):
        sweep.best("final", mode="biggest")
    with pytest.raises(ArgumentError, match="score, final|final, score"):
        sweep.best("accuracy")

    csv_text = sweep.load_text(_keys.SWEEP_TABLE_ARTIFACT)
    parsed = list(csv.DictReader(io.StringIO(csv_text)))
    assert [p["run_id"] for p in parsed] == [r["run_id"] for r in rows]
    assert [float(p["final"]) for p in parsed] == [r["final"] for r in rows]
    svg = sweep.load_text(_keys.SWEEP_PLOT_ARTIFACT)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # one point per trial, one group (and colour) per seed
    assert plotted_points(svg) == {f"pcs-trials-{LR}-seed-1": 3, f"pcs-trials-{LR}-seed-2": 3}
    assert "seed 1" in svg and "seed 2" in svg and LR in svg and "final" in svg
    assert json.loads(sweep.tags[SUMMARY_TAG]) == {"FINISHED": 6, "trials": 6}
    out = sweep.plot(Path("again.svg"), metric="score")
    assert sum(plotted_points(out.read_text()).values()) == 6 and "score" in out.read_text()


def test_a_failing_trial_fails_alone_and_the_sweep_finishes(trainer):
    sweep = sweep_serial(trainer, arg_set={"trainer": {"fit": {"fail_on": 0.2}}})

    statuses = [t.status for t in sweep.trials]
    assert statuses == ["FINISHED", "FINISHED", "FAILED", "FAILED"]
    failed = sweep.trials[2]
    assert failed.tags[_keys.ERROR] == "ValueError: lr 0.2 diverges"
    assert "pcs/traceback.txt" in failed.artifact_paths()
    assert sweep.status == "FINISHED"
    assert json.loads(sweep.tags[SUMMARY_TAG]) == {"FAILED": 2, "FINISHED": 2, "trials": 4}


def test_a_sweep_whose_trials_all_fail_fails(trainer):
    sweep = sweep_serial(trainer, grid={LR: [0.2]}, arg_set={"trainer": {"fit": {"fail_on": 0.2}}})

    assert sweep.status == "FAILED"
    assert [t.status for t in sweep.trials] == ["FAILED", "FAILED"]


def test_process_executor_runs_trials_in_worker_processes_with_the_same_results(trainer):
    inner = {"trainer": {"fit": {"inner": True}}}
    serial = sweep_serial(trainer, arg_set=inner)
    pooled = SweepRun.from_component(trainer, "fit", grid={LR: [0.1, 0.2]}, seeds=[1, 2],
                                     executor="process", max_workers=2, arg_set=inner)

    assert pooled.status == "FINISHED"
    pids = {t.tags[_keys.PID] for t in pooled.trials}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2
    assert [t.return_value for t in pooled.trials] == [t.return_value for t in serial.trials]
    assert [t.status for t in pooled.trials] == ["FINISHED"] * 4
    # every trial records its code as a normal component run does
    assert all(t.grade == serial.trials[0].grade for t in pooled.trials)
    # and is the outer run of what it starts, in its worker process too
    for trial in pooled.trials:
        nested = trial.inner_runs
        assert [r.info.run_name for r in nested] == ["inner"]
        assert nested[0].metrics == {"inner": float(trial.params[LR])}
    assert len(pooled.inner_runs) == 4  # the sweep's inner runs are its trials


def test_trials_run_the_snapshot_when_the_file_changes_meanwhile(trainer, project):
    spec, commands = plan_sweep(trainer, "fit", None, {LR: [0.5]}, None, [3], "serial", None)
    original = sweep_serial(trainer, grid={LR: [0.5]}, seeds=[3])
    sweep = SweepRun._record(spec, commands_text(commands), commands[0].sources, None, None, None)
    (project / "trainer.py").write_text(TRAINER.replace("score += lr *", "score += 100 * lr *"))
    shared = Shared(sweep.identifier, sweep.experiment_id, os.environ["MLFLOW_TRACKING_URI"],
                    commands_registry(commands), dict(commands[0].sources))
    with sweep:
        result = run_trial(Task(0, commands[0].identifier, "trial 0"), TrialContext(shared))

    trial = ComponentRun.from_existing_run_id(result.run_id)
    assert result.status == "FINISHED"
    assert trial.return_value == original.trials[0].return_value
    assert trial.run_command.code == commands[0].code


# -- rerun and resume ------------------------------------------------------------------------------


def test_rerun_verifies_every_trial_as_a_new_linked_sweep(trainer):
    sweep = sweep_serial(trainer)

    again = Run.from_existing_run_id(sweep.identifier).rerun(verify=True)

    assert isinstance(again, SweepRun) and again.identifier != sweep.identifier
    assert again.tags[_keys.RERUN_OF] == sweep.identifier
    assert again.spec.executor == "serial"
    assert isinstance(again.verification, SweepVerification)
    assert again.verification.verdict == "reproduced"
    assert again.tags[_keys.VERIFICATION] == "reproduced"
    for old, new in zip(sweep.trials, again.trials, strict=True):
        assert new.tags[_keys.RERUN_OF] == old.identifier
        assert new.tags[_keys.SWEEP_ID] == again.identifier
        assert new.tags[_keys.VERIFICATION] == "reproduced"
        assert new.return_value == old.return_value
    assert "all 4 trial(s) reproduced" in str(again.verification)
    # the original is untouched: still its own four trials
    assert [t.identifier for t in sweep.trial_runs(refresh=True).values()] == [
        t.identifier for t in sweep.trials
    ]


def test_rerun_lists_the_trials_that_diverged_with_their_first_difference(trainer):
    sweep = sweep_serial(trainer, arg_set={"trainer": {"fit": {"noisy_on": 0.2}}})

    again = sweep.rerun(verify=True, executor="process", max_workers=2)

    report = again.verification
    assert again.spec.executor == "process"
    assert report.verdict == "diverged" and not report.reproduced
    assert [c.index for c in report.diverged] == [2, 3]
    text = str(report)
    assert "2 of 4 trial(s) did not reproduce" in text
    assert "trial 2" in text and "return value differs" in text
    assert report.to_dict()["diverged"] == [2, 3]
    with pytest.raises(PcsError):
        sweep.rerun(verify=True, strict=True, executor="serial")


def test_one_trial_reruns_alone_outside_the_sweep(trainer):
    sweep = sweep_serial(trainer)
    trial = sweep.trials[1]

    alone = Run.from_existing_run_id(trial.identifier).rerun(verify=True)

    assert alone.verification.verdict == "reproduced"
    assert _keys.SWEEP_ID not in alone.tags and _keys.TRIAL not in alone.tags
    assert _keys.PARENT_RUN_ID not in alone.tags
    assert [t.identifier for t in sweep.trial_runs(refresh=True).values()] == [
        t.identifier for t in sweep.trials
    ]


def test_resume_runs_only_missing_failed_and_killed_trials(trainer, tmp_path):
    listed = tmp_path / "failing-lrs"
    listed.write_text("0.2\n")
    sweep = sweep_serial(trainer, grid={LR: [0.1, 0.2, 0.3, 0.4]}, seeds=[1],
                         arg_set={"trainer": {"fit": {"fail_listed": str(listed)}}})
    first = sweep.trials
    assert [t.status for t in first] == ["FINISHED", "FAILED", "FINISHED", "FINISHED"]
    first[2].set_terminated("KILLED")  # as a signal would leave it
    first[3].delete()  # trial 3 has no run now
    assert [r["status"] for r in sweep.table()] == ["FINISHED", "FAILED", "KILLED", "MISSING"]
    listed.write_text("")

    resumed = Run.from_existing_run_id(sweep.identifier).resume_trials(executor="process",
                                                                       max_workers=2)

    after = resumed.trial_runs(refresh=True)
    assert after[0].identifier == first[0].identifier  # finished: left alone
    for index in (1, 2, 3):
        assert after[index].identifier != first[index].identifier
        assert after[index].status == "FINISHED"
        assert after[index].tags[_keys.SWEEP_ID] == sweep.identifier
        assert after[index].tags[_keys.TRIAL] == str(index)
        assert after[index].seed == 1
    assert resumed.refresh().status == "FINISHED"
    # the earlier runs stay nested in the sweep; the table shows the latest of each trial
    inner = {r.identifier for r in resumed.inner_runs}
    assert {first[1].identifier, first[2].identifier} <= inner
    assert [r["run_id"] for r in resumed.table()] == [after[i].identifier for i in range(4)]
    assert json.loads(resumed.tags[SUMMARY_TAG]) == {"FINISHED": 4, "trials": 4}
    csv_rows = list(csv.DictReader(io.StringIO(resumed.load_text(_keys.SWEEP_TABLE_ARTIFACT))))
    assert [r["status"] for r in csv_rows] == ["FINISHED"] * 4
    # nothing left to do: a second resume changes nothing
    again = resumed.resume_trials()
    assert [t.identifier for t in again.trials] == [after[i].identifier for i in range(4)]


def test_resume_refuses_a_sweep_that_is_still_running(trainer):
    sweep = sweep_serial(trainer, grid={LR: [0.1]}, seeds=[1])
    sweep.resume()  # RUNNING again, in this live process
    try:
        with pytest.raises(PcsError, match="still running"):
            SweepRun.from_existing_run_id(sweep.identifier).resume_trials()
    finally:
        sweep.end()


def test_a_sweep_without_its_record_says_so(trainer):
    run = Run(run_name="not a sweep", tags={_keys.RUN_TYPE: "sweep"})
    run.end()
    loaded = Run.from_existing_run_id(run.identifier)
    assert isinstance(loaded, SweepRun)
    with pytest.raises(NotReproducibleError, match="no pcs/sweep.yaml"):
        loaded.resume_trials()
    with pytest.raises(NotReproducibleError, match="no trial runs"):
        loaded.rerun()
    assert loaded.table() == []


# -- moving a sweep between stores -----------------------------------------------------------------


def test_export_import_carries_the_whole_sweep_and_it_reruns(trainer, tmp_path, monkeypatch,
                                                             template_store):
    from pcs import transfer

    sweep = sweep_serial(trainer)
    bundle = tmp_path / "bundle.tar.gz"
    result = transfer.export_bundle([sweep.identifier], bundle)
    assert set(result.run_ids) == {sweep.identifier, *(t.identifier for t in sweep.trials)}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(tmp_path / "other", template_store))
    mapping = transfer.import_bundle(bundle)
    imported = Run.from_existing_run_id(mapping[sweep.identifier])

    assert isinstance(imported, SweepRun)
    assert [t.return_value for t in imported.trials] == [t.return_value for t in sweep.trials]
    assert [r["status"] for r in imported.table()] == ["FINISHED"] * 4
    again = imported.rerun(verify=True)
    assert again.verification.verdict == "reproduced"


def test_publish_and_pull_carry_the_whole_sweep(trainer, tmp_path, monkeypatch, template_store):
    from _registry_server import start_registry_server, stop_process

    from pcs import transfer
    from pcs.web_registry import WebRegistry

    sweep = sweep_serial(trainer, seeds=[1])
    url, process = start_registry_server(tmp_path / "registry", token="t")
    try:
        published = transfer.export_runs_by_id([sweep.identifier], WebRegistry(url, token="t"))
        assert set(published) == {sweep.identifier, *(t.identifier for t in sweep.trials)}
        monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(tmp_path / "other", template_store))
        pulled = Run.from_registry(WebRegistry(url), sweep.identifier)
    finally:
        stop_process(process)

    assert isinstance(pulled, SweepRun)
    assert len(pulled.trials) == 2
    assert pulled.rerun(verify=True).verification.verdict == "reproduced"


# -- the CLI ------------------------------------------------------------------------------------------


def test_cli_sweep_status_rerun_and_resume(project, cli):
    registry = str(project / "components.yaml")

    out = run_cli("sweep", "trainer", "-r", registry, "-e", "fit", "--grid", f"{LR}=0.1,0.2",
                  "--seeds", "1,2", "--executor", "serial", "--metric", "final", "--json",
                  "--progress")
    data = json.loads(out.stdout)
    assert "trials finished" in out.stderr and "4/4 trials" in out.stderr
    sweep_id = data["sweep_id"]
    assert data["status"] == "FINISHED"
    assert [r[LR] for r in data["trials"]] == [0.1, 0.1, 0.2, 0.2]
    assert [r["seed"] for r in data["trials"]] == [1, 2, 1, 2]
    assert data["summary"] == {"FINISHED": 4, "trials": 4}
    assert data["best"]["value"] == max(r["final"] for r in data["trials"])

    listing = cli("status").stdout
    assert sweep_id in listing and "sweep of 4 trials" in listing
    assert all(r["run_id"] not in listing for r in data["trials"])
    shown = cli("status", sweep_id).stdout
    assert all(r["run_id"] in shown for r in data["trials"]) and LR in shown
    status_json = json.loads(cli("status", sweep_id, "--json").stdout)
    assert [r["run_id"] for r in status_json["trials"]] == [r["run_id"] for r in data["trials"]]

    rerun = cli("rerun", sweep_id, "--verify")
    assert "reproduced" in rerun.stdout
    new_id = rerun.stdout.strip().splitlines()[-1]
    assert new_id != sweep_id and Run.from_existing_run_id(new_id).tags[_keys.RERUN_OF] == sweep_id

    resumed = cli("sweep", "--resume", sweep_id)
    assert resumed.stdout.strip().splitlines()[-1] == sweep_id
    assert "4 trial(s): 4 finished" in resumed.stdout


def test_cli_reads_grid_values_as_yaml_and_refuses_bad_input(project, cli):
    from pcs.cli.sweep import parse_grid_option, parse_seeds_option

    assert parse_grid_option("a.b.c=1,2.5,x") == ("a.b.c", [1, 2.5, "x"])
    assert parse_grid_option("a.b.c=[1,2],[3,4]") == ("a.b.c", [[1, 2], [3, 4]])
    assert parse_grid_option("a.b.c='x,y',z,1e-3") == ("a.b.c", ["x,y", "z", 0.001])
    assert parse_seeds_option("1, 2,3") == [1, 2, 3]
    for bad in ("a.b=1", "a.b.c=1,,2"):
        with pytest.raises(ArgumentError):
            parse_grid_option(bad)
    with pytest.raises(ArgumentError):
        parse_seeds_option("1,x")

    result = cli("sweep", "trainer", "-r", str(project / "components.yaml"), "-e", "fit",
                 "--grid", "trainer.fit.lrr=1,2", check=False)
    assert result.returncode == 2 and "Did you mean trainer.fit.lr" in result.stderr
    assert all_runs() == []

    failed = cli("sweep", "trainer", "-r", str(project / "components.yaml"), "-e", "fit",
                 "--grid", f"{LR}=0.1", "-a", "trainer.fit.fail_on=0.1", "--executor", "serial",
                 check=False)
    assert failed.returncode == 6  # no trial finished: the sweep FAILED
    assert "FAILED" in failed.stdout and "pcs sweep --resume" in failed.stdout
    assert Run.from_existing_run_id(failed.stdout.split()[-1]).status == "FAILED"


# -- the example ------------------------------------------------------------------------------------


def test_the_sweep_example_runs(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "sweep" / "sweep_random_agent.py"), "--executor", "serial",
         "--episodes", "1,3", "--out", str(tmp_path / "plot.svg")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    sweep_id = result.stdout.strip().splitlines()[-1]
    sweep = Run.from_existing_run_id(sweep_id)
    assert isinstance(sweep, SweepRun)
    table = sweep.table()
    assert [(r["agent.run_episodes.num_episodes"], r["seed"]) for r in table] == [
        (1, 1), (1, 2), (1, 3), (3, 1), (3, 2), (3, 3)
    ]
    # every trial finished with its metric (CI once plotted 5 of 6: say which, and why)
    assert [(r["status"], r.get("mean_reward") is not None) for r in table] == [
        ("FINISHED", True)
    ] * 6, (table, result.stdout, result.stderr[-3000:])
    assert sum(plotted_points((tmp_path / "plot.svg").read_text()).values()) == 6, (
        table, result.stdout
    )


def test_a_process_sweep_records_and_reruns_on_every_kind_of_store(store, trainer):
    sweep = SweepRun.from_component(trainer, "fit", grid={LR: [0.1, 0.2]}, seeds=[1],
                                    executor="process", max_workers=2)

    assert [t.status for t in sweep.trials] == ["FINISHED", "FINISHED"]
    assert sweep.load_text(_keys.SWEEP_TABLE_ARTIFACT).count("FINISHED") == 2
    again = sweep.rerun(verify=True, executor="serial")
    assert again.verification.verdict == "reproduced"


def test_the_plot_ticks_an_integer_grid_at_its_own_values(tmp_path):
    import xml.etree.ElementTree as ET

    from pcs.sweep.results import write_plot

    rows = [{"trial": i, "run_id": str(i), "status": "FINISHED", "seed": 1, "n": n, "score": n / 2}
            for i, n in enumerate([1, 5, 10, 20])]
    path = tmp_path / "plot.svg"
    write_plot(rows, ["n"], "score", path, "ticks")

    root = ET.fromstring(path.read_text())
    ns = "{http://www.w3.org/2000/svg}"
    ticks = [
        "".join(t.itertext()).strip()
        for g in root.iter(f"{ns}g") if (g.get("id") or "").startswith("xtick_")
        for t in g.iter(f"{ns}text")
    ]
    assert ticks == ["1", "5", "10", "20"]


@pytest.mark.mlflow_server
def test_a_verified_sweep_rerun_on_a_server_prints_no_download_bars(trainer, mlflow_server,
                                                                     monkeypatch):
    import uuid

    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    experiment = MlflowClient(tracking_uri=mlflow_server).create_experiment(f"t-{uuid.uuid4().hex}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    sweep = sweep_serial(trainer, seeds=[1])

    quiet = run_cli("rerun", sweep.identifier, "--verify", "--executor", "serial")
    assert ": reproduced" in quiet.stdout
    assert "Downloading artifacts" not in quiet.stderr  # MLflow's bars: one per download
    loud = run_cli("-v", "rerun", sweep.identifier, "--verify", "--executor", "serial")
    assert "Downloading artifacts" in loud.stderr


def test_progress_bars_of_a_serial_sweep_are_not_its_trials_output(tmp_path, cli):
    """The bars are drawn between trials, never by a timer thread while a trial's output is kept."""
    (tmp_path / "slow.py").write_text(textwrap.dedent('''
        import time


        class Slow:
            def go(self, n=0):
                time.sleep(0.6)  # several of rich's refresh intervals (0.1 s)
                return n
    '''))
    (tmp_path / "components.yaml").write_text(
        "repos:\n  src:\n    type: local\n    path: .\ncomponents:\n  slow:\n    repo: src\n"
        "    file_path: slow.py\n    class_name: Slow\n    instantiate: true\n"
    )
    out = run_cli("sweep", "slow", "-r", str(tmp_path / "components.yaml"), "-e", "go",
                  "--grid", "slow.go.n=1,2", "--executor", "serial", "--json", "--progress")
    assert "trials finished" in out.stderr
    for trial in json.loads(out.stdout)["trials"]:
        logged = cli("logs", trial["run_id"], "--stderr", check=False)
        assert logged.returncode == 3 and "recorded nothing on stderr" in logged.stderr, (
            logged.stdout
        )
