"""Portable runs: export a run with everything, import it into another store, rerun it there.

Every test starts in its own SQLite store ("machine A", from the autouse
``isolated`` fixture) and moves to other stores in other folders with
:func:`switch_store`, which also gives the new "machine" its own ``PCS_HOME``
(so no git clone or export cache is shared) and working directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import random
import re
import shutil
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import make_store, run_cli

from pcs import (
    BundleError,
    Component,
    ComponentRun,
    FormatVersionError,
    InMemoryRegistry,
    NotReproducibleError,
    Run,
    RunNotFoundError,
    transfer,
)

# -- component sources written for each test -------------------------------------------------

COMPONENTS_YAML = """\
repos:
  src:
    type: local
    path: .
components:
  helper:
    repo: src
    file_path: helper.py
    class_name: Helper
    instantiate: true
  trainer:
    repo: src
    file_path: trainer.py
    class_name: Trainer
    instantiate: true
    dependencies:
      helper: helper
"""

HELPER_PY = """\
class Helper:
    def __init__(self, offset=1.0):
        self.offset = offset

    def loss(self, step):
        return self.offset / (step + 1)
"""

TRAINER_PY = """\
import random

from pcs import Run, active_component_run


class Trainer:
    def __init__(self, lr=0.1):
        self.lr = lr

    def train(self, data_run_id, steps=3):
        run = active_component_run(self)
        # reading another run's artifact records it as this run's dependency
        data = Run.from_existing_run_id(data_run_id).load_dict("data.json")
        run.log_params({"lr": self.lr, "scale": data["scale"]})
        losses = []
        with Run(run_name="evaluation") as inner:
            inner.log_params({"split": "test"})
            for step in range(steps):
                loss = self.helper.loss(step) * data["scale"] * self.lr + random.random()
                run.log_metrics({"loss": loss, "noise": random.random()}, step=step)
                inner.log_metric("eval_loss", loss / 2, step=step)
                losses.append(loss)
        run.log_dict({"losses": losses}, "results/losses.json")
        return {"final_loss": losses[-1], "steps": steps}
"""

PICKLER_PY = """\
class Pickler:
    def make(self, n=3):
        return set(range(n))
"""

# tags that hold run ids, which an import rewrites to the ids of the new store
LINK_TAGS = {"pcs.imported_from", "pcs.origin_run_id", "mlflow.parentRunId", "pcs.depends_on", "pcs.rerun_of"}


def write_sources(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "helper.py").write_text(HELPER_PY, encoding="utf-8")
    (folder / "trainer.py").write_text(TRAINER_PY, encoding="utf-8")
    (folder / "components.yaml").write_text(COMPONENTS_YAML, encoding="utf-8")
    return folder / "components.yaml"


def switch_store(folder: Path, template_store: Path, monkeypatch) -> Path:
    """Move this test to "another machine": a new store, PCS_HOME and working directory."""
    uri = make_store(folder, template_store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PCS_HOME", str(folder / "pcs_home"))
    work = folder / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return folder / "mlflow.db"


def db_of(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///"))


def count_runs(db: Path) -> int:
    """Every run row in a SQLite store, in every experiment, deleted or not."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def store_rows(db: Path) -> dict[str, int]:
    """Row counts of every table a run write touches."""
    with sqlite3.connect(db) as conn:
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("runs", "tags", "params", "metrics", "latest_metrics")
        }


def artifact_files(db: Path) -> list[Path]:
    root = db.parent / "mlruns"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def histories(run_id: str) -> dict[str, list[tuple[float, int, int]]]:
    """Every metric's full history: (value, step, timestamp), in a stable order."""
    from mlflow import MlflowClient

    client = MlflowClient()
    keys = client.get_run(run_id).data.metrics
    return {
        key: sorted((m.value, m.step, m.timestamp) for m in client.get_metric_history(run_id, key))
        for key in keys
    }


def record_of(run_id: str) -> dict:
    """What an import must carry over unchanged (ids in link tags aside)."""
    run = Run.from_existing_run_id(run_id)
    return {
        "params": run.params,
        "tags": {k: v for k, v in run.tags.items() if k not in LINK_TAGS},
        "status": run.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "name": run.name,
        "metrics": histories(run.identifier),
    }


def make_dataset(scale: int = 3) -> Run:
    with Run(run_name="dataset") as dep:
        dep.log_dict({"scale": scale}, "data.json")
        dep.log_param("rows", 10)
    return dep


def train_args(data_run_id: str, steps: int = 4) -> dict:
    return {
        "trainer": {"__init__": {"lr": 0.5}, "train": {"data_run_id": data_run_id, "steps": steps}},
        "helper": {"__init__": {"offset": 2.0}},
    }


class Scenario:
    """Machine A's runs: a dataset run, a trainer run (with an inner run) and a rerun of it."""

    def __init__(self, sources: Path) -> None:
        registry_file = write_sources(sources)
        self.sources = sources
        self.dep = make_dataset()
        trainer = Component.from_registry_file(registry_file, "trainer")
        self.original = trainer.run_with_arg_set("train", train_args(self.dep.identifier), seed=5)
        (self.inner,) = self.original.inner_runs
        self.rerun = self.original.rerun()
        (self.rerun_inner,) = self.rerun.inner_runs
        self.return_value = self.original.return_value
        self.ids = [
            self.dep.identifier,
            self.original.identifier,
            self.inner.identifier,
            self.rerun.identifier,
            self.rerun_inner.identifier,
        ]
        self.records = {i: record_of(i) for i in self.ids}


@pytest.fixture
def scenario(tmp_path) -> Scenario:
    made = Scenario(tmp_path / "sources")
    # the record is as the scenario means it to be on machine A
    assert made.original.status == "FINISHED"
    assert made.original.grade == "portable", made.original.grade_reasons
    assert made.original.dependency_ids == [made.dep.identifier]
    assert made.inner.outer_run == made.original
    assert made.rerun.rerun_of == made.original
    assert len(made.records[made.original.identifier]["metrics"]["loss"]) == 4
    return made


def forget_machine_a(tmp_path: Path, scenario: Scenario) -> None:
    """Delete machine A's store and the component sources: only the export is left."""
    shutil.rmtree(scenario.sources)
    (tmp_path / "mlflow.db").unlink()
    shutil.rmtree(tmp_path / "mlruns")


def assert_same_record(original_id: str, expected: dict) -> Run:
    imported = Run.from_existing_run_id(original_id)
    assert imported.identifier != original_id
    assert imported.tags["pcs.imported_from"] == original_id
    assert record_of(imported.identifier) == expected
    return imported


# -- 1. the main scenario -------------------------------------------------------------


def test_export_import_rerun_in_fresh_store(tmp_path, scenario, template_store, monkeypatch):
    registry = scenario.rerun.to_registry(include_artifacts=True)
    assert sorted(registry.identifiers("runs")) == sorted(scenario.ids)
    forget_machine_a(tmp_path, scenario)
    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)
    assert count_runs(db) == 0

    imported = Run.from_registry(registry, scenario.original.identifier)

    assert isinstance(imported, ComponentRun)
    assert imported.tags["pcs.imported_from"] == scenario.original.identifier
    # the run, its dependency and its inner run came along; the rerun (a later run) did not
    assert count_runs(db) == 3
    for original_id in (scenario.original.identifier, scenario.dep.identifier, scenario.inner.identifier):
        assert_same_record(original_id, scenario.records[original_id])
    assert imported.return_value == scenario.return_value

    imported_rerun = Run.from_registry(registry, scenario.rerun.identifier)
    assert count_runs(db) == 5
    for original_id in scenario.ids:
        assert_same_record(original_id, scenario.records[original_id])

    # importing again returns the runs already there
    assert Run.from_registry(registry, scenario.original.identifier) == imported
    assert Run.from_registry(registry, scenario.rerun.identifier) == imported_rerun
    assert count_runs(db) == 5

    # links point at the imported runs
    dep = Run.from_existing_run_id(scenario.dep.identifier)
    inner = Run.from_existing_run_id(scenario.inner.identifier)
    rerun_inner = Run.from_existing_run_id(scenario.rerun_inner.identifier)
    assert inner.tags["mlflow.parentRunId"] == imported.identifier
    assert inner.outer_run == imported
    assert imported.inner_runs == [inner]
    assert rerun_inner.outer_run == imported_rerun
    assert imported.dependency_ids == [dep.identifier]
    assert imported.dependency_runs == [dep]
    assert sorted(r.identifier for r in dep.depender_runs) == sorted(
        [imported.identifier, imported_rerun.identifier]
    )
    assert imported_rerun.tags["pcs.rerun_of"] == imported.identifier
    assert imported_rerun.rerun_of == imported
    assert imported.reruns == [imported_rerun]

    # rerun on machine B, where the source files never existed
    assert not scenario.sources.exists()
    new = imported.rerun(verify=True)

    assert new.verification.reproduced, str(new.verification)
    assert "reproduced" in str(new.verification)
    assert new.rerun_of == imported
    assert new.return_value == scenario.return_value
    assert new.dependency_ids == [dep.identifier]
    assert [m[:2] for m in histories(new.identifier)["loss"]] == [
        m[:2] for m in scenario.records[scenario.original.identifier]["metrics"]["loss"]
    ]
    assert count_runs(db) == 7  # the rerun and its inner run


def test_cli_export_and_import_bundles(tmp_path, scenario, template_store, monkeypatch, cli):
    folder_bundle = tmp_path / "exports" / "bundle"
    tar_bundle = tmp_path / "exports" / "bundle.tar.gz"
    cli("export", scenario.original.identifier, "-o", str(folder_bundle))
    cli("export", scenario.original.identifier, "-o", str(tar_bundle))
    assert (folder_bundle / "registry.yaml").is_file()
    assert (folder_bundle / "artifacts" / scenario.original.identifier / "pcs" / "run_command.yaml").is_file()
    with tarfile.open(tar_bundle) as tar:
        assert "registry.yaml" in tar.getnames()
    forget_machine_a(tmp_path, scenario)
    # machine C imports and reruns in fresh processes: this one still holds machine A's caches
    db = switch_store(tmp_path / "machine_c", template_store, monkeypatch)

    first = run_cli("import", str(folder_bundle)).stdout
    again = run_cli("import", str(tar_bundle)).stdout

    exported = [scenario.dep.identifier, scenario.original.identifier, scenario.inner.identifier]
    mapping = dict(line.split(" -> ") for line in first.strip().splitlines())
    assert sorted(mapping) == sorted(exported)
    assert dict(line.split(" -> ") for line in again.strip().splitlines()) == mapping
    assert count_runs(db) == 3
    for original_id in exported:
        imported = assert_same_record(original_id, scenario.records[original_id])
        assert imported.identifier == mapping[original_id]

    status = json.loads(cli("status", scenario.original.identifier, "--json").stdout)
    assert status["run_id"] == mapping[scenario.original.identifier]
    assert status["imported_from"] == scenario.original.identifier
    assert status["depends_on"] == [mapping[scenario.dep.identifier]]

    result = run_cli("rerun", scenario.original.identifier, "--verify")
    assert "reproduced" in result.stdout
    new = Run.from_existing_run_id(result.stdout.strip().splitlines()[-1])
    assert new.rerun_of.identifier == mapping[scenario.original.identifier]
    assert count_runs(db) == 5


def test_links_in_a_cycle_survive(tmp_path, template_store, monkeypatch):
    # the outer run consumes its own inner run's output: outer -> inner (dependency) and
    # inner -> outer (outer run) form a cycle, so one link is written before its target exists
    with Run(run_name="outer") as outer:
        with Run(run_name="inner") as inner:
            inner.log_dict({"a": 1}, "x.json")
        assert inner.load_dict("x.json") == {"a": 1}
    assert outer.refresh().dependency_ids == [inner.identifier]
    registry = outer.to_registry(include_artifacts=True)
    switch_store(tmp_path / "machine_b", template_store, monkeypatch)

    imported = Run.from_registry(registry, outer.identifier)

    imported_inner = Run.from_existing_run_id(inner.identifier)
    assert imported_inner.tags["mlflow.parentRunId"] == imported.identifier
    assert imported.tags["pcs.depends_on"] == json.dumps([imported_inner.identifier])
    assert imported.inner_runs == [imported_inner]
    assert imported_inner.depender_runs == [imported]


# -- 2. exports without artifacts -------------------------------------------------------------


def test_export_without_artifacts_carries_the_run_command(tmp_path, scenario, template_store, monkeypatch):
    registry = scenario.original.to_registry()
    command_id = scenario.original.tags["pcs.run_command_id"]
    original_command = scenario.original.run_command

    assert registry.identifiers("run_commands") == [command_id]
    assert sorted(registry.identifiers("components")) == ["helper", "trainer"]
    assert registry.identifiers("repos") == ["src"]
    assert len(registry.identifiers("argument_sets")) == 1
    for run_id in registry.identifiers("runs"):
        assert "artifacts" not in registry.get_run_record(run_id)
    forget_machine_a(tmp_path, scenario)
    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)

    imported = Run.from_registry(registry, scenario.original.identifier)

    assert assert_same_record(scenario.original.identifier, scenario.records[scenario.original.identifier])
    reloaded = Run.from_existing_run_id(imported.identifier)
    assert isinstance(reloaded, ComponentRun)
    assert reloaded.run_command.identifier == command_id
    assert reloaded.run_command.argument_set == original_command.argument_set
    assert reloaded.run_command.seed == 5
    assert [c.identifier for c in reloaded.run_command.component.dependency_list()] == ["trainer", "helper"]
    assert [a.path for a in reloaded.list_artifacts("pcs")] == ["pcs/run_command.yaml"]
    assert reloaded.recorded_sources() == {}
    # the snapshot stayed behind and the files are gone: refused before any run is made
    runs_before = count_runs(db)
    with pytest.raises(NotReproducibleError, match="snapshot of src:trainer.py"):
        reloaded.rerun()
    assert count_runs(db) == runs_before


MODEL_PY = """\
import random

from pcs import active_component_run


class Model:
    def __init__(self, width=2):
        self.width = width

    def fit(self, epochs=3):
        run = active_component_run(self)
        weights = [random.gauss(0, 1) for _ in range(self.width)]
        for epoch in range(epochs):
            run.log_metric("norm", sum(w * w for w in weights) / (epoch + 1), step=epoch)
        return {"weights": weights}
"""


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=pcs tests", "-c", "user.email=tests@pcs.invalid", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    )
    return result.stdout.strip()


def make_git_origin(tmp_path: Path, files: dict[str, str]) -> tuple[Path, Path, str]:
    """A work tree with one commit of ``files`` and a bare clone of it: (work, origin, sha)."""
    work = tmp_path / "git_work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text, encoding="utf-8")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    origin = tmp_path / "origin.git"
    git("clone", "-q", "--bare", str(work), str(origin), cwd=tmp_path)
    git("remote", "add", "origin", str(origin), cwd=work)
    return work, origin, git("rev-parse", "HEAD", cwd=work)


def test_export_without_artifacts_reruns_from_the_git_commit(tmp_path, template_store, monkeypatch):
    from pcs import GitRepo

    work, origin, sha = make_git_origin(tmp_path, {"model.py": MODEL_PY})
    repo = GitRepo("models", url=str(origin))
    model = Component.from_repo(repo, f"model=={sha}", "model.py", class_name="Model", instantiate=True)
    original = model.run_with_arg_set("fit", {"model": {"__init__": {"width": 3}, "fit": {"epochs": 4}}}, seed=9)
    expected = record_of(original.identifier)
    # the branch moves on after the run: the rerun must still use the recorded commit
    (work / "model.py").write_text(MODEL_PY.replace("gauss(0, 1)", "gauss(5, 1)"), encoding="utf-8")
    git("commit", "-q", "-am", "second", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    registry = original.to_registry()
    shutil.rmtree(work)
    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)  # no git cache either

    imported = Run.from_registry(registry, original.identifier)

    assert record_of(imported.identifier) == expected
    assert imported.recorded_sources() == {}
    new = imported.rerun(verify=True)
    assert new.verification.reproduced, str(new.verification)
    assert new.return_value == original.return_value
    assert new.code_record["components"][f"model=={sha}"]["git"]["commit"] == sha
    assert count_runs(db) == 2


# -- 3. bad input: refused before anything is written -------------------------------------------

COUNTER_PY = """\
import random

from pcs import active_component_run


class Counter:
    def count(self, n=3):
        run = active_component_run(self)
        values = [random.randint(0, 100) for _ in range(n)]
        for step, value in enumerate(values):
            run.log_metric("value", value, step=step)
        return values
"""


class Bundle:
    """A bundle folder with a plain run (params, metrics, an artifact) and a component run."""

    def __init__(self, tmp_path: Path) -> None:
        from pcs import LocalRepo

        with Run(run_name="plain") as plain:
            plain.log_params({"alpha": 1})
            plain.log_metric("loss", 0.5, step=0)
            plain.log_dict({"x": 1}, "data/values.json")
        sources = tmp_path / "counter_src"
        sources.mkdir()
        (sources / "counter.py").write_text(COUNTER_PY, encoding="utf-8")
        counter = Component.from_repo(
            LocalRepo("counter_src", sources), "counter", "counter.py", class_name="Counter",
            instantiate=True,
        )
        component_run = counter.run_with_arg_set("count", {"counter": {"count": {"n": 4}}}, seed=1)
        self.plain_id = plain.identifier
        self.component_id = component_run.identifier
        self.command_id = component_run.tags["pcs.run_command_id"]
        self.folder = tmp_path / "exports" / "bundle"
        transfer.export_bundle([self.plain_id, self.component_id], self.folder)
        self.secret = tmp_path / "secret.txt"
        self.secret.write_text("not for the bundle", encoding="utf-8")

    @property
    def registry_file(self) -> Path:
        return self.folder / "registry.yaml"

    def load(self) -> dict:
        return yaml.safe_load(self.registry_file.read_text(encoding="utf-8"))

    def save(self, data: dict) -> None:
        self.registry_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def edit(self, change) -> None:
        data = self.load()
        change(data)
        self.save(data)

    def plain(self, data: dict) -> dict:
        return data["runs"][self.plain_id]

    def artifacts(self, run_id: str) -> Path:
        return self.folder / "artifacts" / run_id

    def list_artifact(self, rel: str, content_of: Path) -> None:
        digest = hashlib.sha256(content_of.read_bytes()).hexdigest()
        self.edit(lambda d: self.plain(d)["artifacts"].update({rel: digest}))


@pytest.fixture
def bundle(tmp_path) -> Bundle:
    return Bundle(tmp_path)


def _not_yaml(b: Bundle) -> None:
    b.registry_file.write_text("runs: {unclosed: [\n", encoding="utf-8")


def _runs_is_a_list(b: Bundle) -> None:
    b.edit(lambda d: d.update(runs=[b.plain_id]))


def _run_is_text(b: Bundle) -> None:
    b.edit(lambda d: d["runs"].update({b.plain_id: "FINISHED"}))


def _params_is_a_list(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d).update(params=["alpha"]))


def _param_value_is_a_mapping(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d)["params"].update(alpha={"nested": 1}))


def _param_name_mlflow_refuses(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d)["params"].update({"bad*name": "1"}))


def _history_point_has_text_step(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d)["metrics"].update(loss=[[0.5, "zero", 1700000000000]]))


def _history_point_too_short(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d)["metrics"].update(loss=[[0.5, 0]]))


def _history_is_text(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d)["metrics"].update(loss="0.5,0.4"))


def _history_value_is_bool(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d)["metrics"].update(loss=[[True, 0, 1700000000000]]))


def _history_negative_timestamp(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d)["metrics"].update(loss=[[0.5, 0, -1]]))


def _unknown_status(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d).update(status="DONE"))


def _start_time_is_text(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d).update(start_time="yesterday"))


def _inner_runs_is_text(b: Bundle) -> None:
    b.edit(lambda d: b.plain(d).update(inner_runs="abc"))


def _run_id_leaves_folder(b: Bundle) -> None:
    b.edit(lambda d: d["runs"].update({"../evil": d["runs"].pop(b.plain_id)}))


def _missing_run_command(b: Bundle) -> None:
    b.edit(lambda d: d["run_commands"].pop(b.command_id))


def _missing_component(b: Bundle) -> None:
    b.edit(lambda d: d["components"].pop("counter"))


def _edited_run_command(b: Bundle) -> None:
    b.edit(lambda d: d["run_commands"][b.command_id].update(seed=2))


def _run_command_tag_mismatch(b: Bundle) -> None:
    b.edit(lambda d: d["runs"][b.component_id]["tags"].update({"pcs.run_command_id": "0" * 64}))


def _artifact_deleted(b: Bundle) -> None:
    (b.artifacts(b.plain_id) / "data" / "values.json").unlink()


def _artifact_modified(b: Bundle) -> None:
    with open(b.artifacts(b.component_id) / "pcs" / "run_command.yaml", "a", encoding="utf-8") as fh:
        fh.write("# changed\n")


def _artifacts_folder_missing(b: Bundle) -> None:
    shutil.rmtree(b.artifacts(b.component_id))


def _damaged_run_command_artifact(b: Bundle) -> None:
    path = b.artifacts(b.component_id) / "pcs" / "run_command.yaml"
    path.write_text("run_commands: [", encoding="utf-8")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    b.edit(lambda d: d["runs"][b.component_id]["artifacts"].update({"pcs/run_command.yaml": digest}))


def _artifact_path_with_dotdot(b: Bundle) -> None:
    # a file that a naive join would find, with the right sha256
    shutil.copy(b.secret, b.folder / "artifacts" / "secret.txt")
    b.list_artifact("../secret.txt", b.secret)


def _artifact_path_deep_dotdot(b: Bundle) -> None:
    b.list_artifact("data/../../../../secret.txt", b.secret)


def _artifact_path_absolute(b: Bundle) -> None:
    b.list_artifact(str(b.secret), b.secret)


def _artifact_is_a_link_out(b: Bundle) -> None:
    os.symlink(b.secret, b.artifacts(b.plain_id) / "link.txt")
    b.list_artifact("link.txt", b.secret)


def _no_registry_file(b: Bundle) -> None:
    b.registry_file.unlink()


BAD_BUNDLES = [
    (_not_yaml, BundleError, "not valid YAML"),
    (_runs_is_a_list, BundleError, "must map identifiers"),
    (_run_is_text, BundleError, "must be a mapping"),
    (_params_is_a_list, BundleError, "expected a mapping"),
    (_param_value_is_a_mapping, BundleError, "map names to strings"),
    (_param_name_mlflow_refuses, BundleError, "MLflow refuses"),
    (_history_point_has_text_step, BundleError, "malformed history for metric 'loss'"),
    (_history_point_too_short, BundleError, "malformed history"),
    (_history_is_text, BundleError, "malformed history"),
    (_history_value_is_bool, BundleError, "malformed history"),
    (_history_negative_timestamp, BundleError, "malformed history"),
    (_unknown_status, BundleError, "status 'DONE'"),
    (_start_time_is_text, BundleError, "start_time"),
    (_inner_runs_is_text, BundleError, "inner_runs"),
    (_run_id_leaves_folder, BundleError, "not a valid run id"),
    (_missing_run_command, BundleError, "no run command"),
    (_missing_component, BundleError, "no component 'counter'"),
    (_edited_run_command, BundleError, "edited or damaged"),
    (_run_command_tag_mismatch, BundleError, "edited or damaged"),
    (_artifact_deleted, BundleError, "data/values.json is missing"),
    (_artifact_modified, BundleError, "does not match its recorded sha256"),
    (_artifacts_folder_missing, BundleError, "no artifacts folder"),
    (_damaged_run_command_artifact, BundleError, "run_command.yaml"),
    (_artifact_path_with_dotdot, BundleError, "leaves its folder"),
    (_artifact_path_deep_dotdot, BundleError, "leaves its folder"),
    (_artifact_path_absolute, BundleError, "leaves its folder"),
    (_artifact_is_a_link_out, BundleError, "leads out of its folder"),
    (_no_registry_file, BundleError, "no registry.yaml"),
]


@pytest.mark.parametrize(
    "damage, error, message", BAD_BUNDLES, ids=[d.__name__.strip("_") for d, _, _ in BAD_BUNDLES]
)
def test_bad_bundle_is_refused_and_nothing_is_written(
    tmp_path, bundle, template_store, monkeypatch, damage, error, message
):
    damage(bundle)
    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)
    before = store_rows(db)

    with pytest.raises(error, match=re.escape(message)):
        transfer.import_bundle(bundle.folder)

    assert store_rows(db) == before == dict.fromkeys(before, 0)
    assert artifact_files(db) == []


def test_bad_bundle_is_refused_by_from_registry_and_the_cli(tmp_path, bundle, template_store, monkeypatch, cli):
    _artifact_modified(bundle)
    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)
    registry = InMemoryRegistry.from_yaml(bundle.registry_file)

    # the plain run is fine; the component run is refused on its own
    assert Run.from_registry(registry, bundle.plain_id).tags["pcs.imported_from"] == bundle.plain_id
    assert count_runs(db) == 1
    with pytest.raises(BundleError, match="does not match its recorded sha256"):
        Run.from_registry(registry, bundle.component_id)
    with pytest.raises(RunNotFoundError, match="neither in the tracking store"):
        Run.from_registry(registry, "f" * 32)
    result = cli("import", str(bundle.folder), check=False)
    assert result.returncode == BundleError.exit_code
    assert "does not match its recorded sha256" in result.stderr
    assert "Traceback" not in result.stderr
    assert count_runs(db) == 1


@pytest.mark.parametrize("where", ["registry", "run", "run_command"])
def test_newer_format_is_refused(tmp_path, bundle, template_store, monkeypatch, where, cli):
    def newer(data: dict) -> None:
        target = {
            "registry": data,
            "run": data["runs"][bundle.plain_id],
            "run_command": data["run_commands"][bundle.command_id],
        }[where]
        target["pcs_format"] = 99

    bundle.edit(newer)
    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)

    with pytest.raises(FormatVersionError, match="Upgrade pcs"):
        transfer.import_bundle(bundle.folder)
    assert count_runs(db) == 0
    result = cli("import", str(bundle.folder), check=False)
    assert result.returncode != 0 and "Upgrade pcs" in result.stderr
    assert count_runs(db) == 0


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_archive_with_traversal_member_is_refused(tmp_path, bundle, template_store, monkeypatch, cli):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_gz({
        "registry.yaml": bundle.registry_file.read_bytes(),
        "../evil": b"escaped",
    }))
    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)

    with pytest.raises(BundleError, match="'..' component"):
        transfer.import_bundle(archive)
    result = cli("import", str(archive), check=False)

    assert result.returncode == BundleError.exit_code
    assert count_runs(db) == 0 and artifact_files(db) == []
    assert not (tmp_path / "evil").exists() and not (Path.cwd().parent / "evil").exists()


def test_truncated_archive_is_refused(tmp_path, bundle, template_store, monkeypatch):
    archive = tmp_path / "bundle.tar.gz"
    transfer.export_bundle([bundle.plain_id], archive)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)

    with pytest.raises(BundleError, match="truncated"):
        transfer.import_bundle(archive)
    assert count_runs(db) == 0


def test_failed_write_midway_leaves_nothing_behind(tmp_path, template_store, monkeypatch):
    # the dependency has no artifacts and is written first; uploading the depender's
    # artifacts fails, because the store's artifact location is unusable
    dep = Run(run_name="no artifacts")
    dep.log_param("p", 1)
    dep.end()
    with Run(run_name="with artifacts") as depender:
        depender.add_dependency(dep)
        depender.log_dict({"x": 1}, "x.json")
    registry = depender.to_registry(include_artifacts=True)
    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE experiments SET artifact_location = 'unknown-scheme://nowhere/0' "
            "WHERE experiment_id = 0"
        )

    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="unknown-scheme"):
        Run.from_registry(registry, depender.identifier)

    assert store_rows(db) == dict.fromkeys(store_rows(db), 0)


# -- pickled return values --------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a folder: proof that unpickling ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def make_pickler_run(tmp_path: Path) -> tuple[Path, Run]:
    """A component run whose return value (a set) is recorded with dill."""
    from pcs import LocalRepo

    sources = tmp_path / "pickler_src"
    sources.mkdir()
    (sources / "pickler.py").write_text(PICKLER_PY, encoding="utf-8")
    pickler = Component.from_repo(
        LocalRepo("p", sources), "pickler", "pickler.py", class_name="Pickler", instantiate=True
    )
    run = pickler.run_with_arg_set(
        "make", {"pickler": {"make": {"n": 3}}}, seed=1, return_value_format="dill"
    )
    return sources, run


def test_pickled_return_value_needs_trust(tmp_path, template_store, monkeypatch):
    sources, original = make_pickler_run(tmp_path)
    assert original.tags["pcs.return_value_format"] == "dill"
    honest = tmp_path / "honest"
    transfer.export_bundle([original.identifier], honest)
    # the same bundle, with a pickle that runs code, and a matching sha256
    evil = tmp_path / "evil"
    shutil.copytree(honest, evil)
    marker = tmp_path / "unpickled"
    pkl = evil / "artifacts" / original.identifier / "pcs" / "return_value.pkl"
    pkl.write_bytes(pickle.dumps(_Payload(marker)))
    data = yaml.safe_load((evil / "registry.yaml").read_text(encoding="utf-8"))
    evil_sha = hashlib.sha256(pkl.read_bytes()).hexdigest()
    data["runs"][original.identifier]["artifacts"]["pcs/return_value.pkl"] = evil_sha
    data["runs"][original.identifier]["tags"]["pcs.return_value_sha256"] = evil_sha
    (evil / "registry.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")

    switch_store(tmp_path / "machine_b", template_store, monkeypatch)
    registry = InMemoryRegistry.from_yaml(honest / "registry.yaml")
    imported = Run.from_registry(registry, original.identifier)
    with pytest.raises(NotReproducibleError, match="trust=True"):
        imported.return_value  # noqa: B018
    with pytest.raises(NotReproducibleError, match="trust=True"):
        Run.from_existing_run_id(original.identifier).return_value  # noqa: B018
    assert Run.from_existing_run_id(original.identifier).return_value_of(trust=True) == {0, 1, 2}
    assert Run.from_registry(registry, original.identifier, trust=True).return_value == {0, 1, 2}

    switch_store(tmp_path / "machine_c", template_store, monkeypatch)
    transfer.import_bundle(evil)
    untrusted = Run.from_existing_run_id(original.identifier)
    with pytest.raises(NotReproducibleError, match="trust=True"):
        untrusted.return_value  # noqa: B018
    # verifying a rerun against it does not unpickle it either: without trust the value is
    # named as not compared (it needs --trust), never reproduced
    rerun = untrusted.rerun(verify=True)
    assert not rerun.verification.reproduced
    assert any("needs --trust" in n for n in rerun.verification.not_compared)
    assert not marker.exists()


def test_rerun_of_imported_dill_run_reproduces(tmp_path, template_store, monkeypatch):
    sources, original = make_pickler_run(tmp_path)
    registry = original.to_registry(include_artifacts=True)
    shutil.rmtree(sources)
    switch_store(tmp_path / "machine_b", template_store, monkeypatch)

    new = Run.from_registry(registry, original.identifier, trust=True).rerun(verify=True)

    assert new.verification.reproduced, str(new.verification)


# -- 4. large histories, many runs --------------------------------------------------------------


def comparable(history: dict[str, list[tuple[float, int, int]]]) -> dict:
    """Histories with NaN made comparable (NaN != NaN)."""
    return {
        key: [("nan" if math.isnan(v) else v, step, ts) for v, step, ts in points]
        for key, points in history.items()
    }


def test_large_history_and_many_runs_round_trip(tmp_path, template_store, monkeypatch):
    from mlflow.entities import Metric

    rng = random.Random(0)
    start = 1_700_000_000_000
    metrics = [Metric("loss", rng.uniform(-1e6, 1e6), start + i, i) for i in range(3000)]
    # extreme values, and several values at the same step with different timestamps
    metrics += [Metric("extreme", v, start + i, 7) for i, v in enumerate(
        [1e-300, -1e300, 0.1, 1 / 3, 2.0**53 + 1, float("nan"), 0.0, -0.0]
    )]
    dependencies = []
    for i in range(40):
        dep = Run(run_name=f"shard-{i}")
        dep.log_metric("rows", i, step=0)
        dep.end()
        dependencies.append(dep)
    long_run = Run(run_name="long")
    for chunk in range(0, len(metrics), 1000):
        long_run.client.log_batch(long_run.identifier, metrics=metrics[chunk : chunk + 1000])
    long_run.log_params({f"p{i}": i for i in range(100)})
    long_run.set_tags({f"t{i}": "x" * i for i in range(150)})  # more than one batch of tags
    for dep in dependencies:
        long_run.add_dependency(dep)
    long_run.end()
    ids = [long_run.identifier] + [d.identifier for d in dependencies]
    expected = {i: record_of(i) for i in ids}
    assert len(expected[long_run.identifier]["metrics"]["loss"]) == 3000
    archive = tmp_path / "long.tar.gz"
    transfer.export_bundle([long_run.identifier], archive)
    registry = long_run.to_registry()
    assert len(registry.identifiers("runs")) == 41
    # specs are strict JSON (the registry server's format): NaN travels as a string
    spec = registry.get_run_record(long_run.identifier)
    json.dumps(spec, allow_nan=False)
    assert ["NaN", 7, start + 5] in spec["metrics"]["extreme"]
    # exporting one more run into the same registry reports that run only
    assert transfer.export_runs_by_id([dependencies[0].identifier], registry, include_artifacts=False) == [
        dependencies[0].identifier
    ]

    db = switch_store(tmp_path / "machine_b", template_store, monkeypatch)
    mapping = transfer.import_bundle(archive)
    assert sorted(mapping) == sorted(ids)
    assert count_runs(db) == 41
    for original_id in ids:
        got = record_of(mapping[original_id])
        want = expected[original_id]
        assert comparable(got.pop("metrics")) == comparable(want["metrics"])
        assert got == {k: v for k, v in want.items() if k != "metrics"}
    imported = Run.from_existing_run_id(long_run.identifier)
    assert imported.dependency_ids == [mapping[d.identifier] for d in dependencies]

    # the in-memory export (no YAML in between) gives the same histories
    switch_store(tmp_path / "machine_c", template_store, monkeypatch)
    again = Run.from_registry(registry, long_run.identifier)
    assert comparable(histories(again.identifier)) == comparable(expected[long_run.identifier]["metrics"])


def test_round_trip_back_to_the_first_store_does_not_duplicate(tmp_path, isolated, template_store, monkeypatch):
    with Run(run_name="travels") as run:
        run.log_metric("m", 1.0, step=0)
        run.log_dict({"a": 1}, "a.json")
    db_a = db_of(isolated)
    home_a, work_a = os.environ["PCS_HOME"], Path.cwd()
    transfer.export_bundle([run.identifier], tmp_path / "to_b")
    switch_store(tmp_path / "machine_b", template_store, monkeypatch)
    copy = Run.from_existing_run_id(transfer.import_bundle(tmp_path / "to_b")[run.identifier])
    transfer.export_bundle([run.identifier], tmp_path / "back_to_a")  # the original id resolves
    monkeypatch.setenv("MLFLOW_TRACKING_URI", isolated)
    monkeypatch.setenv("PCS_HOME", home_a)
    monkeypatch.chdir(work_a)
    runs_in_a = count_runs(db_a)

    mapping = transfer.import_bundle(tmp_path / "back_to_a")

    assert mapping == {copy.identifier: run.identifier}
    assert count_runs(db_a) == runs_in_a


def test_rerun_after_import_of_component_with_requirements(tmp_path, template_store, monkeypatch):
    sources = tmp_path / "sources"
    registry_file = write_sources(sources)
    (sources / "requirements.txt").write_text("dill\n", encoding="utf-8")
    text = registry_file.read_text(encoding="utf-8")
    registry_file.write_text(
        text.replace("    class_name: Trainer\n", "    class_name: Trainer\n    requirements_path: requirements.txt\n"),
        encoding="utf-8",
    )
    dep = make_dataset()
    trainer = Component.from_registry_file(registry_file, "trainer")
    assert trainer.requirements_path == "requirements.txt"
    original = trainer.run_with_arg_set("train", train_args(dep.identifier), seed=5)
    registry = original.to_registry(include_artifacts=True)
    shutil.rmtree(sources)
    switch_store(tmp_path / "machine_b", template_store, monkeypatch)

    new = Run.from_registry(registry, original.identifier).rerun(verify=True)

    assert new.verification.reproduced, str(new.verification)


def test_nan_metrics_and_runs_without_artifacts_travel_through_the_server(
    tmp_path, template_store, monkeypatch
):
    from _registry_server import start_registry_server, stop_process

    from pcs.web_registry import WebRegistry

    url, process = start_registry_server(tmp_path / "server")
    try:
        empty = Run(run_name="no artifacts")
        empty.log_metrics({"nan": float("nan"), "inf": float("inf"), "ok": 1.5}, step=3)
        empty.end()
        with Run(run_name="depender") as depender:
            depender.add_dependency(empty)
            depender.log_dict({"x": 1}, "x.json")
        expected = {r.identifier: record_of(r.identifier) for r in (empty, depender)}
        published = transfer.export_runs_by_id(
            [depender.identifier], WebRegistry(url, token="secret"), include_artifacts=True
        )
        assert sorted(published) == sorted(expected)
        switch_store(tmp_path / "machine_b", template_store, monkeypatch)

        pulled = Run.from_registry(WebRegistry(url), depender.identifier)

        for original_id, record in expected.items():
            got = record_of(Run.from_existing_run_id(original_id).identifier)
            assert comparable(got.pop("metrics")) == comparable(record.pop("metrics"))
            assert got == record
        assert pulled.load_dict("x.json") == {"x": 1}
        assert pulled.dependency_runs == [Run.from_existing_run_id(empty.identifier)]
    finally:
        stop_process(process)


def test_import_goes_to_the_experiment_of_the_same_name(tmp_path, template_store, monkeypatch):
    from mlflow import MlflowClient

    from pcs import Component, LocalRepo, Run

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("class M:\n    def go(self):\n        return 7\n")
    experiment = MlflowClient().create_experiment("team-exp")
    component = Component.from_repo(LocalRepo("s", tmp_path / "src"), "m", "m.py", "M", instantiate=True)
    run = component.run_with_arg_set("go", {}, experiment_id=experiment)
    registry = run.to_registry()  # without artifacts
    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(tmp_path / "b", template_store))
    imported = Run.from_registry(registry, run.identifier)
    assert MlflowClient().get_experiment(imported.experiment_id).name == "team-exp"
    with pytest.raises(NotReproducibleError, match="exported without artifacts"):
        Run.from_existing_run_id(imported.identifier).return_value  # noqa: B018


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    """An archive that unpacks to far more than its size is refused before the store is touched."""
    import gzip
    import io
    import tarfile

    from pcs.transfer import bundle

    monkeypatch.setattr(bundle, "MIN_UNPACKED_LIMIT", 1024**2)
    payload = b"\0" * (8 * 1024**2)  # 8 MiB of zeros gzip to a few KiB
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("bundle/artifacts/x/zeros.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(BundleError, match="unpacks to more than"):
        transfer.import_bundle(bomb)


def test_a_copy_of_a_copy_still_resolves_the_first_id(tmp_path, template_store, monkeypatch):
    from pcs import Run

    with Run(run_name="first") as first:
        first.log_metric("m", 1.0)
    registry_a = first.to_registry()
    switch_store(tmp_path / "b", template_store, monkeypatch)
    in_b = Run.from_registry(registry_a, first.identifier)
    registry_b = in_b.to_registry()
    switch_store(tmp_path / "c", template_store, monkeypatch)
    in_c = Run.from_registry(registry_b, in_b.identifier)
    assert in_c.tags["pcs.imported_from"] == in_b.identifier
    assert Run.from_existing_run_id(first.identifier) == in_c  # A's id resolves in C
    assert Run.from_existing_run_id(in_b.identifier) == in_c


# -- the package's face, progress ------------------------------------------------------------------


def test_the_public_names_and_features_stay_where_they_were():
    from pcs._features import feature
    from pcs.transfer import bundle, export, importer

    for name in transfer.__all__:
        assert getattr(transfer, name) is not None
    assert feature("export_runs") is transfer.export_runs is export.export_runs
    assert feature("import_run") is transfer.import_run is importer.import_run
    assert transfer.run_spec is bundle.run_spec


def by_description(calls: list[tuple[str, int, int | None]]) -> dict[str, list[tuple[int, int | None]]]:
    out: dict[str, list[tuple[int, int | None]]] = {}
    for description, done, total in calls:
        out.setdefault(description, []).append((done, total))
    return out


def assert_monotonic_and_complete(reports: list[tuple[int, int | None]]) -> int:
    dones = [done for done, _ in reports]
    assert dones == sorted(dones)
    assert reports[-1][0] == reports[-1][1]  # it ends at its total
    return reports[-1][0]


def test_export_and_import_report_bytes(tmp_path, template_store, monkeypatch):
    (tmp_path / "blob.bin").write_bytes(os.urandom(300_000))
    with Run(run_name="data") as data:
        data.log_artifact(tmp_path / "blob.bin", "raw")
    with Run(run_name="model") as model:
        model.add_dependency(data)
        model.log_dict({"w": [1, 2, 3]}, "model.json")
    artifact_bytes = sum(
        path.stat().st_size
        for run in (data, model)
        for path in Path(run.info.artifact_uri).rglob("*") if path.is_file()
    )
    archive = tmp_path / "b.tar.gz"
    calls: list = []

    transfer.export_bundle([model.identifier], archive, progress=lambda *a: calls.append(a))

    reports = by_description(calls)
    assert sorted(reports) == ["exporting 2 run(s)", "packing b.tar.gz"]
    assert assert_monotonic_and_complete(reports["exporting 2 run(s)"]) == artifact_bytes
    assert assert_monotonic_and_complete(reports["packing b.tar.gz"]) == archive.stat().st_size

    switch_store(tmp_path / "machine_b", template_store, monkeypatch)
    calls.clear()
    transfer.import_bundle(archive, progress=lambda *a: calls.append(a))

    reports = by_description(calls)
    assert sorted(reports) == ["checking runs", "importing 2 run(s)", "unpacking b.tar.gz"]
    assert assert_monotonic_and_complete(reports["unpacking b.tar.gz"]) == archive.stat().st_size
    assert assert_monotonic_and_complete(reports["checking runs"]) == artifact_bytes
    assert assert_monotonic_and_complete(reports["importing 2 run(s)"]) == artifact_bytes
