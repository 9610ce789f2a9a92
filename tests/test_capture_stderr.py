"""stderr is recorded and compared like stdout, without the lines MLflow and pcs print on their own."""

from __future__ import annotations

import textwrap

import pytest
from conftest import component_from_source

from pcs import Component, LocalRepo, Run
from pcs._capture import code_folder_as_placeholder, drop_tool_lines
from pcs.verification import compare_runs

NOISY = """\
import logging
import sys

log = logging.getLogger("noisy")


class Noisy:
    def run(self, accuracy=0.9):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
        # like a warning or a traceback, from the folder the code runs in
        print(f"{__file__}:10: UserWarning: this API is old", file=sys.stderr)
        log.info("accuracy %.3f", accuracy)
        return 1
"""


@pytest.fixture
def noisy(tmp_path) -> Component:
    return component_from_source(tmp_path, "noisy", NOISY, "Noisy")


def test_results_logged_to_stderr_are_recorded_and_compared(noisy):
    import logging

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        first = noisy.run_with_arg_set("run", {}, seed=1)
        stored = Run.from_existing_run_id(first.identifier)
        stderr = stored.load_text("pcs/stderr.txt")
        assert "UserWarning: this API is old" in stderr and "INFO accuracy 0.900" in stderr

        # a rerun of the recorded snapshot warns from another folder: still reproduced
        rerun = stored.rerun(verify=True)
        assert rerun.verification.verdict == "reproduced", rerun.verification.differences
        assert "stderr" in rerun.verification.compared

        # the same return value, another logged result: diverged, on stderr
        other = noisy.run_with_arg_set("run", {"noisy": {"run": {"accuracy": 0.95}}}, seed=1)
        report = compare_runs(stored, Run.from_existing_run_id(other.identifier))
        assert report.verdict == "diverged"
        assert report.first_difference.kind == "stderr"
        assert "INFO accuracy 0.900" in report.first_difference.detail

        # ignore=["stderr"] leaves it out
        ignored = compare_runs(stored, Run.from_existing_run_id(other.identifier), ignore=["stderr"])
        assert ignored.verdict == "reproduced" and "stderr" not in ignored.compared
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)


def test_mlflow_and_pcs_lines_are_not_compared():
    text = (
        "epoch 1 loss 0.5\n"
        "🏃 View run bright-owl-42 at: http://127.0.0.1:5000/#/experiments/1/runs/abc123\n"
        "🧪 View experiment at: http://127.0.0.1:5000/#/experiments/1\n"
        "2026/12/07 13:00:00 INFO mlflow.tracking.fluent: Autologging successfully enabled for sklearn.\n"
        "2026/12/07 13:00:01 WARNING mlflow.models.model: Model logged without a signature.\n"
        "pcs: could not stage the end of run abc: disk full\n"
        "Downloading artifacts:   0%|          | 0/1 [00:00<?, ?it/s]\r"
        "Downloading artifacts: 100%|██████████| 1/1 [00:00<00:00, 215.3it/s]\n"
        " 40%|████      | 4/10 [00:01<00:01,  3.90it/s]\n"
        "epoch 2 loss 0.25\n"
    )
    assert drop_tool_lines(text) == "epoch 1 loss 0.5\nepoch 2 loss 0.25\n"


def test_what_the_code_printed_is_never_dropped():
    text = (
        "accuracy 100%\n"
        "View run summary at: my own words\n"
        "INFO mlflow-like but mine: 0.9\n"
        "progress: 3/10 done [fold 1]\n"
        "a|b|c 1/2 [x]\n"
    )
    assert drop_tool_lines(text) == text


def test_the_code_folder_is_compared_as_a_placeholder():
    files = {"train.py", "helpers/data.py"}
    original = (
        "/home/ana/exp/train.py:12: UserWarning: old\n"
        '  File "/home/ana/exp/helpers/data.py", line 3, in load\n'
        "data in /home/ana/exp/data\n"
    )
    rerun = (
        "/root/.pcs/sources/9f2c/train.py:12: UserWarning: old\n"
        '  File "/root/.pcs/sources/9f2c/helpers/data.py", line 3, in load\n'
        "data in /root/.pcs/sources/9f2c/data\n"
    )
    assert code_folder_as_placeholder(original, files) == code_folder_as_placeholder(rerun, files)
    assert code_folder_as_placeholder(original, files).startswith("<code folder>/train.py:12")
    # a path that is not the code's folder stays as printed
    assert code_folder_as_placeholder("/data/train.pyc\n/x/retrain.py\n", files) == (
        "/data/train.pyc\n/x/retrain.py\n"
    )


def test_a_stderr_that_differs_only_by_mlflow_lines_reproduces(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "chatty.py").write_text(textwrap.dedent("""\
        import random
        import sys


        class Chatty:
            def run(self):
                n = random.randint(0, 10**6)
                print(f"2026/12/07 13:00:{n % 60:02d} INFO mlflow.store: noise {n}", file=sys.stderr)
                print("result 7", file=sys.stderr)
                return 7
    """), encoding="utf-8")
    chatty = Component.from_repo(LocalRepo("src", folder), "chatty", "chatty.py", "Chatty", instantiate=True)
    a = chatty.run_with_arg_set("run", {}, seed=1)
    b = chatty.run_with_arg_set("run", {}, seed=2)
    report = compare_runs(Run.from_existing_run_id(a.identifier), Run.from_existing_run_id(b.identifier))
    assert report.verdict == "reproduced", report.differences
    assert "stderr" in report.compared
