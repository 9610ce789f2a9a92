"""Logging handlers follow the run: one made during a run writes to the real stream after it, and into later runs."""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest
from conftest import component_from_source

from pcs import Component, LocalRepo, Run

LOGGER = """\
import logging
import sys


class Logger:
    def run(self, value=1, force=False):
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=force)
        logging.info("trial value %s", value)
        return 0
"""


@pytest.fixture(autouse=True)
def root_handlers():
    """The root logger's handlers and level as they were before the test; restored after."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in before:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def logger(tmp_path) -> Component:
    return component_from_source(tmp_path, "logger", LOGGER, "Logger")


def as_in_a_script() -> None:
    """No handler on the root logger, as in a script (pytest adds its own when a test starts)."""
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)


def stdout_of(run: Run) -> str:
    stored = Run.from_existing_run_id(run.identifier)
    paths = {a.path for a in stored.list_artifacts("pcs")}
    return stored.load_text("pcs/stdout.txt") if "pcs/stdout.txt" in paths else ""


def test_every_trial_of_a_serial_sweep_records_what_it_logs(logger):
    as_in_a_script()
    sweep = logger.sweep("run", grid={"logger.run.value": [1, 2, 3]}, executor="serial")
    trials = sweep.trials
    assert len(trials) == 3
    assert sorted(stdout_of(t) for t in trials) == [f"trial value {v}\n" for v in (1, 2, 3)]
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler))
    assert handler.stream is sys.stdout  # the real stream again, not a finished run's capture


@pytest.mark.parametrize("force", [True, False])
def test_runs_after_the_first_record_what_its_handler_logs(logger, force):
    as_in_a_script()
    args = {"logger": {"run": {"force": force}}}
    runs = [logger.run_with_arg_set("run", {"logger": {"run": {"value": v, "force": force}}})
            for v in (1, 2)]
    assert [stdout_of(r) for r in runs] == ["trial value 1\n", "trial value 2\n"]
    # the README's pattern: run, then rerun in the same process
    first = logger.run_with_arg_set("run", args)
    rerun = Run.from_existing_run_id(first.identifier).rerun(verify=True)
    assert stdout_of(rerun) == "trial value 1\n"
    assert rerun.verification.verdict == "reproduced"


def test_a_rerun_that_logs_other_text_diverges(logger, tmp_path):
    as_in_a_script()
    first = logger.run_with_arg_set("run", {})
    source = tmp_path / "src" / "logger.py"
    source.write_text(source.read_text(encoding="utf-8").replace(
        '"trial value %s"', '"trial value %s (changed)"'), encoding="utf-8")
    rerun = Run.from_existing_run_id(first.identifier).rerun(verify=True, code="current")
    report = rerun.verification
    assert report.verdict == "diverged"
    assert report.first_difference.kind == "stdout"
    assert "(changed)" in report.first_difference.detail


def test_a_handler_made_outside_any_run_is_left_alone(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "quiet.py").write_text(textwrap.dedent("""\
        class Quiet:
            def run(self):
                print("inside")
    """), encoding="utf-8")
    import io

    mine = io.StringIO()
    handler = logging.StreamHandler(mine)
    logging.getLogger().addHandler(handler)
    Component.from_repo(LocalRepo("src", folder), "quiet", "quiet.py", "Quiet", instantiate=True).run_with_arg_set("run", {})
    assert handler.stream is mine


def test_a_handler_that_reads_the_stream_each_time_is_left_as_it_is(logger):
    # logging.lastResort's stream is a read-only property returning sys.stderr; some
    # libraries attach it to their loggers
    as_in_a_script()
    library = logging.getLogger("some.library")
    library.addHandler(logging.lastResort)  # type: ignore[arg-type]
    try:
        run = logger.run_with_arg_set("run", {})
        assert run.status == "FINISHED"
    finally:
        library.removeHandler(logging.lastResort)  # type: ignore[arg-type]
