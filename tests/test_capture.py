"""What an entry point prints is shown live and kept with the run, bounded, never cut silently."""

from __future__ import annotations

import sys

import pytest
from conftest import component_from_source, run_cli

import pcs
from pcs import ComponentRun, Run
from pcs._capture import CUT_TAGS, OutputCapture

# a real AgentOS agent prints its results and returns None
PRINTER = """\
import random
import sys


class Printer:
    def run(self, n=3):
        for i in range(n):
            print(f"episode {i}: reward {random.random():.6f}")
        print("warning: nothing is wrong", file=sys.stderr)
"""

FAILING = """\
class Failing:
    def run(self):
        print("got this far")
        raise RuntimeError("boom")
"""


component = component_from_source


def load(run: Run) -> ComponentRun:
    return Run.from_existing_run_id(run.identifier)  # type: ignore[return-value]


def test_output_is_shown_live_and_kept_with_the_run(tmp_path, capsys):
    run = component(tmp_path, "printer", PRINTER, "Printer").run_with_arg_set("run", {}, seed=1)

    live = capsys.readouterr()
    stored = load(run)
    stdout = stored.load_text("pcs/stdout.txt")
    assert stdout.count("episode ") == 3 and stdout in live.out
    assert stored.load_text("pcs/stderr.txt") == "warning: nothing is wrong\n"
    assert "warning: nothing is wrong" in live.err
    assert not any(tag in stored.tags for tag in CUT_TAGS.values())
    assert sys.stdout is not None and type(sys.stdout).__name__ != "_Tee"


def test_output_of_a_failed_run_is_kept_too(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        component(tmp_path, "failing", FAILING, "Failing").run_with_arg_set("run", {})
    failed = Run.get_all_runs()[0]
    assert failed.status == "FAILED"
    assert failed.load_text("pcs/stdout.txt") == "got this far\n"
    assert "RuntimeError: boom" in failed.load_text("pcs/traceback.txt")


def test_a_run_that_prints_nothing_writes_no_output_files(tmp_path):
    quiet = component(tmp_path, "quiet", "class Quiet:\n    def run(self):\n        return 1\n", "Quiet")
    run = quiet.run_with_arg_set("run", {})
    paths = {a.path for a in load(run).list_artifacts("pcs")}
    assert "pcs/stdout.txt" not in paths and "pcs/stderr.txt" not in paths
    assert load(run).rerun(verify=True).verification.verdict == "reproduced"


def test_output_beyond_the_limit_is_cut_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(pcs._capture, "LIMIT_BYTES", 100)
    loud = component(tmp_path, "loud", """\
        class Loud:
            def run(self):
                print("x" * 250)
    """, "Loud")
    run = load(loud.run_with_arg_set("run", {}))

    text = run.load_text("pcs/stdout.txt")
    assert text.startswith("x" * 100 + "\n[pcs: stdout cut here")
    assert "printed 251 bytes, and only the first 100 are kept" in text
    assert run.tags["pcs.stdout_cut_bytes"] == "151"


def test_printing_agents_are_compared_by_their_output(tmp_path):
    printer = component(tmp_path, "printer", PRINTER, "Printer")
    first = printer.run_with_arg_set("run", {}, seed=1)
    second = printer.run_with_arg_set("run", {}, seed=2)

    rerun = load(first).rerun(verify=True)
    assert rerun.verification.verdict == "reproduced"
    assert "stdout" in rerun.verification.compared

    diff = run_cli("diff", first.identifier, second.identifier, check=False)
    assert diff.returncode == 1
    assert "diverged" in diff.stdout
    assert "stdout differs at line 1" in diff.stdout
    assert "seed: 1 vs 2" in diff.stdout


def test_capture_restores_the_streams_and_cuts_on_a_character_boundary(tmp_path):
    before = sys.stdout, sys.stderr
    capture = OutputCapture(limit_bytes=5)
    with capture:
        sys.stdout.write("abcdé")  # 'é' is two bytes: only 'abcd' fits
        sys.stderr.write("")
    assert (sys.stdout, sys.stderr) == before
    tags = capture.write_files(tmp_path)
    assert (tmp_path / "stdout.txt").read_text(encoding="utf-8").startswith("abcd\n[pcs: stdout cut")
    assert tags == {CUT_TAGS["stdout"]: "2"}
    assert not (tmp_path / "stderr.txt").exists()


LOGGING_AT_IMPORT = """\
import logging
import sys

logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
log = logging.getLogger("experiment")


class Trainer:
    def run(self, accuracy=0.9):
        print("experiment start")
        log.info("accuracy %.3f", accuracy)
"""


def test_a_logging_handler_made_when_the_module_loads_is_captured(tmp_path):
    import logging

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        trainer = component(tmp_path, "trainer", LOGGING_AT_IMPORT, "Trainer")
        run = trainer.run_with_arg_set("run", {}, seed=1)
        assert load(run).load_text("pcs/stdout.txt") == "experiment start\naccuracy 0.900\n"
        # a changed logged result is a changed output, not "reproduced"
        other = trainer.run_with_arg_set("run", {"trainer": {"run": {"accuracy": 0.95}}}, seed=1)
        from pcs.verification import compare_runs

        report = compare_runs(load(run), load(other))
        assert report.verdict == "diverged" and report.first_difference.kind == "stdout"
        # the handler writes to the real stream again after the run
        handler = next(h for h in root.handlers if h not in before)
        assert handler.stream is sys.stdout
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
