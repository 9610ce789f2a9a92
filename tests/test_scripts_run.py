"""Plain scripts as runs: ``pcs.run_script`` and ``pcs run train.py ARGS`` (issue 18, points 1 and 2).

Real scripts in temp folders, run in this process (``run_script``) or through
the ``pcs`` CLI in a subprocess, against the per-test SQLite store.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from conftest import run_cli

import pcs
from pcs import ScriptError, ScriptExitError
from pcs.run import Run

TRAIN = """
import argparse
import random

import mlflow
from helpers import scale

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--name", default="base")
args = parser.parse_args()
print("training", args.lr, __name__)
for epoch in range(args.epochs):
    mlflow.log_metric("loss", scale(args.lr) / (epoch + 1) + random.random(), step=epoch)
"""

HELPERS = """
def scale(x):
    return x * 2
"""

CLICK = """
import click
import mlflow

@click.command()
@click.option("--depth", type=int, default=4)
@click.option("--act", default="relu")
@click.argument("data")
def main(depth, act, data):
    mlflow.log_metric("size", depth * len(data))
    print("click", depth, act, data)

if __name__ == "__main__":
    main()
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path) -> Path:
    folder = tmp_path / "project"
    write(folder, "train.py", TRAIN)
    write(folder, "helpers.py", HELPERS)
    return folder


def run_ids() -> list[str]:
    return [r.info.run_id for r in mlflow.search_runs(search_all_experiments=True, output_format="list")]


def test_argparse_values_become_params_under_their_own_names(project):
    run = pcs.run_script(project / "train.py", ["--lr", "0.5"], seed=3)
    assert run.status == "FINISHED"
    assert run.params["lr"] == "0.5"
    assert run.params["epochs"] == "3"  # a default is a param too
    assert run.params["name"] == "base"
    assert json.loads(run.params["pcs.argv"]) == ["--lr", "0.5"]
    assert len(run.metric_history("loss")) == 3
    found = mlflow.search_runs(filter_string="params.lr = '0.5'", output_format="list",
                               search_all_experiments=True)
    assert [r.info.run_id for r in found] == [run.identifier]


def test_the_helper_module_is_part_of_the_recorded_code(project):
    run = pcs.run_script(project / "train.py", [], seed=1)
    modules = {e.get("module") for e in run.run_command.code.values()}
    assert "helpers" in modules
    assert HELPERS.strip() in "\n".join(run.recorded_sources().values())


def test_the_argv_is_in_the_run_command_and_changes_its_identifier(project):
    a = pcs.run_script(project / "train.py", ["--lr", "0.5"], seed=1)
    b = pcs.run_script(project / "train.py", ["--lr", "0.6"], seed=1)
    c = pcs.run_script(project / "train.py", ["--lr", "0.5"], seed=1)
    assert a.run_command.argument_set.to_dict() == {"train": {"run": {"argv": ["--lr", "0.5"]}}}
    assert a.run_command.identifier != b.run_command.identifier
    assert a.run_command.identifier == c.run_command.identifier


def test_a_script_that_parses_nothing_records_its_argv(tmp_path):
    script = write(tmp_path, "plain.py", "import sys\nprint(sys.argv[1:])\n")
    run = pcs.run_script(script, ["a", "--b", "3"])
    assert run.status == "FINISHED"
    assert json.loads(run.params["pcs.argv"]) == ["a", "--b", "3"]
    assert set(run.params) == {"pcs.argv", "pcs.seed"}


def test_click_parameters_become_params(tmp_path):
    script = write(tmp_path, "cli_train.py", CLICK)
    run = pcs.run_script(script, ["--depth", "7", "abc"], seed=2)
    assert run.status == "FINISHED"  # click's sys.exit(0) at the end
    assert run.params["depth"] == "7"
    assert run.params["act"] == "relu"
    assert run.params["data"] == "abc"
    assert run.metrics["size"] == 21


def test_the_script_runs_as_main_with_its_argv_and_file(tmp_path):
    script = write(tmp_path, "probe.py", """
        import sys, json, os
        import mlflow
        from pathlib import Path
        mlflow.log_dict({
            "name": __name__, "argv": sys.argv, "file": __file__,
            "path0": sys.path[0], "main_is_me": sys.modules["__main__"].__dict__ is globals(),
        }, "probe.json")
    """)
    argv_before, main_before = list(sys.argv), sys.modules["__main__"]
    run = pcs.run_script(script, ["x", "--y"])
    seen = run.load_dict("probe.json")
    assert seen["name"] == "__main__"
    assert seen["argv"] == [str(script.resolve()), "x", "--y"]
    assert seen["file"] == str(script.resolve())
    assert seen["path0"] == str(tmp_path.resolve())
    assert seen["main_is_me"] is True
    assert sys.argv == argv_before and sys.modules["__main__"] is main_before


def test_mlflow_start_run_in_the_script_is_the_pcs_run_unless_nested(tmp_path):
    script = write(tmp_path, "own_run.py", """
        import mlflow
        with mlflow.start_run(tags={"phase": "train"}) as run:
            mlflow.log_param("inside", run.info.run_id)
            mlflow.log_metric("m", 1.0)
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("child_metric", 2.0)
        mlflow.end_run()   # leaves the pcs run open: pcs ends it
        mlflow.log_metric("after", 3.0)
    """)
    run = pcs.run_script(script)
    assert run.status == "FINISHED"
    assert run.params["inside"] == run.identifier
    assert run.tags["phase"] == "train"
    assert run.metrics == {"m": 1.0, "after": 3.0}
    children = run.inner_runs
    assert [c.name for c in children] == ["child"]
    assert children[0].metrics == {"child_metric": 2.0}
    assert mlflow.active_run() is None


def test_a_script_reading_a_data_file_and_spawning_a_subprocess(tmp_path):
    write(tmp_path, "data.csv", "1\n2\n3\n")
    write(tmp_path, "child.py", "import sys\nprint(int(sys.argv[1]) * 10)\n")
    script = write(tmp_path, "pipeline.py", """
        import subprocess, sys
        from pathlib import Path
        import mlflow
        here = Path(__file__).parent
        total = sum(int(x) for x in (here / "data.csv").read_text().split())
        out = subprocess.run([sys.executable, str(here / "child.py"), str(total)],
                             capture_output=True, text=True, check=True).stdout
        mlflow.log_metric("total", total)
        mlflow.log_metric("child", int(out))
    """)
    run = pcs.run_script(script, seed=1)
    assert run.status == "FINISHED"
    assert run.metrics == {"total": 6, "child": 60}


@pytest.mark.parametrize("exit_line, finished", [
    ("sys.exit(0)", True), ("sys.exit()", True), ("sys.exit(None)", True), ("pass", True),
])
def test_a_clean_exit_finishes_the_run(tmp_path, exit_line, finished):
    script = write(tmp_path, "ends.py", f"import sys\nprint('ok')\n{exit_line}\nprint('after')\n")
    run = pcs.run_script(script)
    assert run.status == "FINISHED"


def test_a_nonzero_exit_fails_the_run_with_its_code(tmp_path):
    script = write(tmp_path, "fails.py", "import sys\nsys.exit(3)\n")
    with pytest.raises(ScriptExitError) as info:
        pcs.run_script(script)
    assert info.value.exit_code == 3
    failed = Run.from_existing_run_id(info.value.pcs_run_id)
    assert failed.status == "FAILED"
    assert "exited with code 3" in failed.tags["pcs.error"]


def test_an_exception_fails_the_run_with_its_error(tmp_path, capfd):
    script = write(tmp_path, "raises.py", "def go():\n    raise ValueError('boom')\ngo()\n")
    with pytest.raises(ValueError, match="boom") as info:
        pcs.run_script(script)
    failed = Run.from_existing_run_id(info.value.pcs_run_id)
    assert failed.status == "FAILED"
    assert failed.tags["pcs.error"] == "ValueError: boom"
    err = capfd.readouterr().err
    assert "raises.py" in err and "ValueError: boom" in err  # the traceback, as python prints it


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "missing.py", "does not exist"),
    (lambda d: d, "is a folder"),
    (lambda d: write(d, "broken.py", "x = (\n"), "does not compile"),
])
def test_bad_scripts_are_refused_before_any_run(tmp_path, make, match):
    with pytest.raises(ScriptError, match=match):
        pcs.run_script(make(tmp_path))
    assert run_ids() == []


def test_a_module_that_is_not_installed_is_refused(tmp_path):
    with pytest.raises(ScriptError, match="No module named 'no_such_module_pcs'"):
        pcs.run_script(module="no_such_module_pcs")
    assert run_ids() == []


def test_argv_must_be_strings(project):
    with pytest.raises(pcs.ArgumentError, match="strings"):
        pcs.run_script(project / "train.py", ["--lr", 0.1])  # type: ignore[list-item]
    with pytest.raises(pcs.ArgumentError, match="list of strings"):
        pcs.run_script(project / "train.py", "--lr 0.1")  # type: ignore[arg-type]
    assert run_ids() == []


def test_a_module_runs_as_python_dash_m_does(tmp_path, monkeypatch):
    write(tmp_path / "pkg", "__init__.py", "")
    write(tmp_path / "pkg", "util.py", "FACTOR = 5\n")
    write(tmp_path / "pkg", "__main__.py", """
        import sys
        import mlflow
        from pkg.util import FACTOR
        mlflow.log_metric("value", FACTOR * int(sys.argv[1]))
        mlflow.log_param("package", __package__)
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = pcs.run_script(module="pkg", argv=["3"])
    assert run.status == "FINISHED"
    assert run.metrics["value"] == 15
    assert run.params["package"] == "pkg"
    again = run.rerun(verify=True)
    assert again.verification.verdict == "reproduced"


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_runs_a_script_with_its_own_arguments(project):
    result = run_cli("run", "--seed", "4", str(project / "train.py"), "--lr", "0.25", "--epochs", "2")
    run_id = result.stdout.strip().splitlines()[-1]
    assert "training 0.25 __main__" in result.stdout
    run = Run.from_existing_run_id(run_id)
    assert run.params["lr"] == "0.25" and run.params["epochs"] == "2"
    assert run.seed == 4


def test_cli_passes_every_option_after_the_script_to_it(tmp_path, cli):
    script = write(tmp_path, "echo.py", "import sys, mlflow\nmlflow.log_param('got', ' '.join(sys.argv[1:]))\n")
    result = cli("run", str(script), "--", "-r", "x", "--seed", "5")
    run = Run.from_existing_run_id(result.stdout.strip().splitlines()[-1])
    assert run.params["got"] == "-r x --seed 5"  # a leading '--' after the script is pcs's


def test_cli_exits_with_the_scripts_code(tmp_path, cli):
    script = write(tmp_path, "fails.py", "import sys\nprint('about to fail')\nsys.exit(3)\n")
    result = cli("run", str(script), check=False)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: Run ") and "FAILED: The script exited with code 3." in lines[-1]
    assert "about to fail" in result.stdout


def test_cli_a_raising_script_exits_non_zero(tmp_path, cli):
    script = write(tmp_path, "raises.py", "raise RuntimeError('bad data')\n")
    result = cli("run", str(script), check=False)
    assert result.returncode == 6
    assert "RuntimeError: bad data" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args, match", [
    (["missing.py"], "No script at missing.py"),
    (["."], "is a folder"),
    (["broken.py"], "does not compile (line 1)"),
    (["-m", "no_such_module_pcs", "--x"], "No module named 'no_such_module_pcs'"),
    (["-e", "fit", "train.py"], "--entry-point is for components"),
])
def test_cli_bad_input_is_one_line_and_no_run(tmp_path, args, match, cli):
    write(Path.cwd(), "broken.py", "def f(:\n")
    result = cli("run", *args, check=False)
    assert result.returncode == 2
    err = [line for line in result.stderr.splitlines() if not line.startswith("pcs: no MLflow store")]
    assert len(err) == 1 and err[0].startswith("Error: ") and match in err[0]
    assert run_ids() == []
