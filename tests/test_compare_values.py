"""Return values compare as values: arrays NaN for NaN, dataclasses field by field, floats within
tolerance anywhere inside, and a pickled value of an imported run only with trust."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dill
import yaml
from conftest import make_store, run_cli

from pcs import Component, LocalRepo, Run, transfer
from pcs.verification import compare_runs

RESULT = """\
from dataclasses import dataclass

import numpy as np


@dataclass
class Result:
    weights: np.ndarray
    name: str


class Fit:
    def go(self, shift=0.0):
        w = np.array([1.0, float("nan"), 3.0 + shift])
        return Result(weights=w, name="fit")

    def losses(self, eps=0.0):
        return {"losses": [0.5, 0.25 + eps], "best": 0.25 + eps}
"""


def fit_component(folder: Path) -> Component:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fit.py").write_text(RESULT, encoding="utf-8")
    return Component.from_repo(LocalRepo("fit_dir", folder), "fit", "fit.py", "Fit", instantiate=True)


def load(run) -> Run:
    return Run.from_existing_run_id(run.identifier)


def test_dill_dataclass_of_arrays_with_nan_compares_by_value(tmp_path):
    component = fit_component(tmp_path / "src")
    run = component.run_with_arg_set("go", {}, seed=1, return_value_format="dill")
    report = load(run).rerun(verify=True).verification
    assert report.verdict == "reproduced", str(report)
    assert "return value" in report.compared

    other = component.run_with_arg_set("go", {"fit": {"go": {"shift": 1.0}}}, seed=1,
                                       return_value_format="dill")
    report = compare_runs(load(run), load(other))
    assert report.verdict == "diverged"
    assert report.first_difference.kind == "return_value"
    assert ".weights" in report.first_difference.detail


def test_tolerance_applies_to_floats_inside_a_return_value(tmp_path):
    component = fit_component(tmp_path / "src")
    exact = component.run_with_arg_set("losses", {}, seed=1)
    nudged = component.run_with_arg_set("losses", {"fit": {"losses": {"eps": 1e-15}}}, seed=1)

    strict = compare_runs(load(exact), load(nudged))
    assert strict.verdict == "diverged", str(strict)
    assert "at ['best']: 0.25 vs 0.250000000000001" in strict.first_difference.detail  # keys sorted by YAML

    report = compare_runs(load(exact), load(nudged), rtol=1e-9)
    assert report.verdict == "reproduced within tolerance", str(report)
    assert "return value (floats within rtol/atol)" in report.compared
    assert report.max_deviation[0].startswith("return value[")

    far = component.run_with_arg_set("losses", {"fit": {"losses": {"eps": 0.1}}}, seed=1)
    assert compare_runs(load(exact), load(far), rtol=1e-9).verdict == "diverged"


PICKLER = """\
class Pickler:
    def make(self, n=3):
        return set(range(n))
"""


def imported_pickled_run(tmp_path: Path, template_store: Path, monkeypatch) -> str:
    """A run whose return value (a set, pickled by dill) was imported into a fresh store."""
    sources = tmp_path / "pickler_src"
    sources.mkdir()
    (sources / "pickler.py").write_text(PICKLER, encoding="utf-8")
    component = Component.from_repo(LocalRepo("p", sources), "pickler", "pickler.py", "Pickler",
                                    instantiate=True)
    original = component.run_with_arg_set("make", {}, seed=1, return_value_format="dill")
    bundle = tmp_path / "bundle"
    transfer.export_bundle([original.identifier], bundle)
    shutil.rmtree(sources)
    # the same value pickled otherwise (as another process or dill version may): other bytes
    pkl = bundle / "artifacts" / original.identifier / "pcs" / "return_value.pkl"
    pkl.write_bytes(dill.dumps({0, 1, 2}, protocol=2))
    sha = hashlib.sha256(pkl.read_bytes()).hexdigest()
    data = yaml.safe_load((bundle / "registry.yaml").read_text(encoding="utf-8"))
    data["runs"][original.identifier]["artifacts"]["pcs/return_value.pkl"] = sha
    data["runs"][original.identifier]["tags"]["pcs.return_value_sha256"] = sha
    (bundle / "registry.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    other = tmp_path / "machine_b"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(other, template_store))
    (other / "work").mkdir()
    monkeypatch.chdir(other / "work")
    transfer.import_bundle(bundle)
    return original.identifier


def test_an_imported_pickled_value_is_compared_only_with_trust(tmp_path, template_store, monkeypatch):
    run_id = imported_pickled_run(tmp_path, template_store, monkeypatch)

    report = Run.from_existing_run_id(run_id).rerun(verify=True).verification
    assert report.verdict != "diverged", str(report)
    assert "PYTHONHASHSEED" not in str(report)
    assert any(n.startswith("return value:") and "needs --trust" in n for n in report.not_compared)
    assert "needs --trust" in str(report)

    trusted = Run.from_existing_run_id(run_id).rerun(verify=True, trust=True).verification
    assert trusted.verdict == "reproduced", str(trusted)
    assert "return value" in trusted.compared

    cli = run_cli("rerun", "--verify", "--trust", run_id, check=False)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.splitlines()[0].endswith(": reproduced")
    untrusted = run_cli("rerun", "--verify", run_id, check=False)
    assert "needs --trust" in untrusted.stdout and "diverged" not in untrusted.stdout
