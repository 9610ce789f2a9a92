"""Issue 21.6: import refuses what it cannot write, before writing, and names the bundle given.

Real bundles exported from a real SQLite store, edited as a stranger might,
imported with the real ``pcs import`` into another real store.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import make_store, run_cli

from pcs import Run, transfer
from pcs._yaml import load_yaml
from pcs.errors import BundleError, RegistryError


@pytest.fixture
def exported(tmp_path, monkeypatch, template_store):
    """A folder bundle of one run with a metric history, and a second, empty store to import into."""
    with Run(run_name="source") as run:
        run.log_param("lr", "0.1")
        for step in range(3):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
    folder = tmp_path / "bundle"
    transfer.export_bundle([run.identifier], folder)
    other = make_store(tmp_path / "other", template_store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    return run.identifier, folder, other


def _archive(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="bundle")
    return archive


def _runs_in_store() -> list[str]:
    from mlflow import MlflowClient

    return [r.info.run_id for r in MlflowClient().search_runs(
        ["0"], run_view_type=3)]  # ViewType.ALL: deleted ones count too


def test_duplicate_keys_are_refused_naming_the_key():
    for text, key in (("status: FINISHED\nstatus: RUNNING\n", "status"),
                      ("runs:\n  r1:\n    tags: {a: '1', a: '2'}\n", "a")):
        with pytest.raises(RegistryError, match=f"has the key '{key}' twice") as caught:
            load_yaml(text, "registry.yaml", RegistryError)
        assert "\n" not in str(caught.value)
    # merge keys and keys that only look alike are not duplicates
    assert load_yaml("d: &d {p: 1}\ne: {<<: *d, p: 2}\n1: a\n'1': b\n", "x", RegistryError) == {
        "d": {"p": 1}, "e": {"p": 2}, 1: "a", "1": "b"}


def test_a_duplicate_key_in_a_strangers_bundle_is_one_line_naming_the_bundle(exported, tmp_path):
    run_id, folder, _ = exported
    registry = folder / "registry.yaml"
    text = registry.read_text()
    assert "status: FINISHED" in text
    registry.write_text(text.replace("status: FINISHED", "status: FINISHED\n    status: RUNNING", 1))
    archive = _archive(folder, tmp_path / "stranger.tar.gz")
    result = run_cli("import", str(archive), check=False)
    assert result.returncode == 7
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "'status' twice" in lines[0] and str(archive) in lines[0]
    assert "pcs-" not in lines[0] and "/tmp" not in lines[0].replace(str(archive), "")
    assert _runs_in_store() == []


def test_a_step_beyond_int64_is_a_bundle_error_naming_run_and_metric(exported, tmp_path):
    run_id, folder, _ = exported
    import yaml

    registry = folder / "registry.yaml"
    data = yaml.safe_load(registry.read_text())
    data["runs"][run_id]["metrics"]["loss"][1][1] = 2**63
    registry.write_text(yaml.safe_dump(data))
    with pytest.raises(BundleError) as caught:
        transfer.import_bundle(folder)
    message = str(caught.value)
    assert run_id in message and "'loss'" in message and "64-bit" in message
    assert _runs_in_store() == []
    result = run_cli("import", str(_archive(folder, tmp_path / "b.tar.gz")), check=False)
    assert result.returncode == 7, result.stderr
    assert run_id in result.stderr and "'loss'" in result.stderr and "b.tar.gz" in result.stderr
    assert _runs_in_store() == []


def test_reimport_after_the_copy_was_deleted_restores_it(exported, caplog):
    run_id, folder, _ = exported
    first = transfer.import_bundle(folder)[run_id]
    Run.from_existing_run_id(first).delete()
    assert Run.from_existing_run_id(first).lifecycle_stage == "deleted"
    again = transfer.import_bundle(folder)[run_id]
    assert again == first
    copy = Run.from_existing_run_id(again)
    assert copy.lifecycle_stage == "active"
    assert copy.params["lr"] == "0.1"
    assert "restored" in caplog.text
    assert len(_runs_in_store()) == 1


def test_errors_of_a_folder_bundle_name_it(exported, tmp_path):
    run_id, folder, _ = exported
    moved = tmp_path / "given-name"
    shutil.copytree(folder, moved)
    (moved / "registry.yaml").write_text("runs: [\n")
    with pytest.raises(BundleError) as caught:
        transfer.import_bundle(moved)
    assert str(moved) in str(caught.value)
