"""Hydra scripts (issue 18): the composed config becomes params, the config folder is kept
with the record, and a rerun composes the recorded config even after the files changed.

Real ``@hydra.main`` scripts with a config folder and a config group, run in this process
and through the ``pcs`` CLI, against the test's SQLite store.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import mlflow
import pytest
from conftest import run_cli

import pcs
from pcs.record.script import _imports_hydra, flat_config

TRAIN = """
import hydra
import mlflow
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    score = cfg.lr * cfg.model.depth
    mlflow.log_metric("score", score)
    print("score", score, cfg.model.name)


if __name__ == "__main__":
    main()
"""


@pytest.fixture
def project(tmp_path) -> Path:
    folder = tmp_path / "project"
    (folder / "conf" / "model").mkdir(parents=True)
    (folder / "train.py").write_text(textwrap.dedent(TRAIN))
    (folder / "conf" / "config.yaml").write_text(
        "defaults:\n  - model: small\n  - _self_\nlr: 0.5\ntags: [a, b]\nlabel: ${model.name}-run\n")
    (folder / "conf" / "model" / "small.yaml").write_text("name: small\ndepth: 2\n")
    (folder / "conf" / "model" / "big.yaml").write_text("name: big\ndepth: 10\n")
    return folder


def _edit_config(project: Path) -> None:
    config = project / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.5", "lr: 0.7"))


def test_the_composed_config_is_the_params_under_dotted_names(project):
    run = pcs.run_script(project / "train.py", ["model.depth=3"], seed=1)
    assert run.status == "FINISHED"
    params = {k: v for k, v in run.params.items() if not k.startswith("pcs.")}
    assert params == {"lr": "0.5", "model.name": "small", "model.depth": "3", "tags": "[a, b]",
                      "label": "small-run"}  # defaults, overrides and interpolations, not Hydra's options
    assert run.params["pcs.argv"] == '["model.depth=3"]'
    assert run.metrics["score"] == 1.5
    found = mlflow.search_runs(filter_string="params.`model.depth` = '3'", output_format="list")
    assert [r.info.run_id for r in found] == [run.identifier]


def test_the_whole_config_folder_is_kept_and_a_rerun_uses_the_recorded_config(project):
    run = pcs.run_script(project / "train.py", [], seed=1)
    data = run._read_yaml("pcs/inputs.yaml")["data"]
    kept = {path for files in data.values() for path in files}
    # big.yaml was not composed by this run, but a derived run may select it
    assert {"conf/config.yaml", "conf/model/small.yaml", "conf/model/big.yaml"} <= kept
    assert all(entry["snapshot"] for files in data.values() for entry in files.values())

    _edit_config(project)
    (project / "conf" / "model" / "big.yaml").unlink()
    again = run.rerun(verify=True)
    assert again.verification.verdict == "reproduced", str(again.verification)
    assert again.params["lr"] == "0.5" and again.metrics["score"] == 1.0

    derived = run.rerun(args=["model=big"])  # the recorded folder, so big.yaml is there
    assert derived.params["model.name"] == "big" and derived.metrics["score"] == 5.0
    assert derived.params["lr"] == "0.5"


def test_a_rerun_of_the_current_files_diverges_and_names_the_edited_config(project):
    run = pcs.run_script(project / "train.py", [], seed=1)
    _edit_config(project)
    current = run.rerun(verify=True, code="current")
    report = current.verification
    assert report.verdict == "diverged"
    assert any(d.key == "score" for d in report.differences), str(report)
    assert any("conf/config.yaml changed" in cause for cause in report.causes), report.causes


def test_cli_rerun_in_a_fresh_process_composes_the_recorded_config(project):
    first = run_cli("run", str(project / "train.py"), "model=big", cwd=project)
    run_id = first.stdout.strip().splitlines()[-1]
    _edit_config(project)
    again = run_cli("rerun", run_id, "--verify", cwd=project)
    assert f"(rerun of {run_id}): reproduced" in again.stdout, again.stdout + again.stderr


def test_only_scripts_that_import_hydra_get_it_loaded():
    assert _imports_hydra("import hydra\n") and _imports_hydra("from hydra import main\n")
    assert _imports_hydra("def f():\n    from hydra.core.hydra_config import HydraConfig\n")
    assert not _imports_hydra("import hydrant\nimport argparse\n")
    assert not _imports_hydra("def broken(:\n")


def test_flat_config_names_nested_values_with_dots():
    assert flat_config({"a": 1, "m": {"d": 2, "opt": {"lr": 0.1}}, "l": [1, 2], "e": {}}) == {
        "a": 1, "m.d": 2, "m.opt.lr": 0.1, "l": [1, 2], "e": {}}
