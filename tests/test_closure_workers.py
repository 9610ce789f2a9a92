"""Worker processes a run starts import the run's own code: the recorded version in a rerun."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

from pcs import Component, LocalRepo, Run

AGENT = """\
import importlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from helpers import square


def work(x):
    return square(x) + 1


class Agent:
    def pool(self, n=4):
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            return pool.map(work, range(n))

    def executor(self, n=4):
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(2, mp_context=context) as executor:
            return list(executor.map(work, range(n)))

    def joblib(self, n=4):
        from joblib import Parallel, delayed

        return Parallel(n_jobs=2)(delayed(work)(i) for i in range(n))

    def helper_function(self, n=4):
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            return pool.map(square, range(n))

    def late(self, n=4):
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pool.map(abs, [1, 2])  # the workers run before the helper is imported
            late = importlib.import_module("late_" + "helper")  # no literal: the scan cannot see it
            # a worker that cannot import the helper loses the task and the pool waits forever:
            # the bound turns that into a failure (it is no measure of speed)
            return pool.map_async(late.cube, range(n)).get(timeout=300)
"""

HELPERS = "def square(x):\n    return x * x\n"
CHANGED = "def square(x):\n    return -x\n"
LATE = "def cube(x):\n    return x ** 3\n"


def agent(tmp_path: Path) -> Component:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "agent.py").write_text(textwrap.dedent(AGENT), encoding="utf-8")
    (folder / "helpers.py").write_text(HELPERS, encoding="utf-8")
    (folder / "late_helper.py").write_text(LATE, encoding="utf-8")
    return Component.from_repo(LocalRepo("src", folder), "agent", "agent.py", "Agent", instantiate=True)


@pytest.mark.parametrize("entry_point, expected", [
    ("pool", [1, 2, 5, 10]),               # a spawn Pool over a function of the component's file
    ("executor", [1, 2, 5, 10]),           # a forkserver ProcessPoolExecutor
    ("joblib", [1, 2, 5, 10]),             # joblib's loky workers
    ("helper_function", [0, 1, 4, 9]),     # a function of a helper module, by reference
])
def test_workers_run_the_recorded_code_in_a_rerun(tmp_path, entry_point, expected):
    component = agent(tmp_path)
    run = component.run_with_arg_set(entry_point, {})
    assert run.status == "FINISHED"
    assert run.return_value == expected
    assert run.grade == "portable"

    (tmp_path / "src" / "helpers.py").write_text(CHANGED, encoding="utf-8")
    rerun = Run.from_existing_run_id(run.identifier).rerun(verify=True)

    assert rerun.return_value == expected  # the workers imported the recorded helpers.py
    assert rerun.verification.verdict == "reproduced"


def test_workers_started_before_a_helper_is_imported_run_its_recorded_text(tmp_path):
    component = agent(tmp_path)
    run = component.run_with_arg_set("late", {})
    assert run.return_value == [0, 1, 8, 27]

    (tmp_path / "src" / "late_helper.py").write_text("def cube(x):\n    return -x\n", encoding="utf-8")
    rerun = Run.from_existing_run_id(run.identifier).rerun(verify=True)

    assert rerun.return_value == [0, 1, 8, 27]  # the pool's workers read the pin made after they started
    assert rerun.verification.verdict == "reproduced"


def test_workers_of_a_run_of_current_code_import_the_changed_helper(tmp_path):
    run = agent(tmp_path).run_with_arg_set("pool", {})
    (tmp_path / "src" / "helpers.py").write_text(CHANGED, encoding="utf-8")

    current = Run.from_existing_run_id(run.identifier).rerun(verify=True, code="current")

    assert current.return_value == [1, 0, -1, -2]
    assert current.verification.verdict == "diverged"
    assert "code: helpers.py changed" in current.verification.causes


def test_a_fresh_process_reruns_spawn_workers_from_the_record_after_the_helper_was_deleted(tmp_path):
    run = agent(tmp_path).run_with_arg_set("pool", {})
    (tmp_path / "src" / "helpers.py").unlink()

    result = run_cli("rerun", run.identifier, "--verify")

    assert "reproduced" in result.stdout


def test_the_environment_is_given_back_after_the_run(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    agent(tmp_path).run_with_arg_set("helper_function", {"agent": {"helper_function": {"n": 1}}})

    assert os.environ["PYTHONPATH"] == "/somewhere/else"
    assert "PCS_CLOSURE_MANIFEST" not in os.environ


def test_the_manifest_folder_of_a_process_that_is_gone_is_removed(tmp_path):
    import os
    import subprocess
    import sys
    import tempfile

    from pcs.record import workers

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = Path(tempfile.mkdtemp(prefix=f"pcs-{gone.pid}-workers-"))
    mine = Path(tempfile.mkdtemp(prefix=f"pcs-{os.getpid()}-workers-"))
    try:
        workers._remove_orphans()

        assert not orphan.exists()
        assert mine.exists()  # a live process keeps its folder
    finally:
        mine.rmdir()
