"""Exports, publishes and pulls that are killed or interrupted leave nothing behind; no secrets travel.

The processes load the hook of :mod:`test_import_claims` to stop at a known
point (after the n-th call of an MlflowClient or WebRegistry method); then
they get SIGTERM (they unwind: temp folders and half-written runs are removed,
and the process ends as the signal says) or SIGKILL (the next export sweeps
what is left).
"""

from __future__ import annotations

import os
import signal
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from _registry_server import start_registry_server, stop_process
from conftest import make_store, run_cli
from test_import_claims import HOOK, Hook

from pcs import Component, LocalRepo, Run, transfer

TOKEN = "registry-token"


@pytest.fixture
def hook(tmp_path) -> Hook:
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "pcs_test_hook.py").write_text(HOOK, encoding="utf-8")
    return Hook(folder)


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory):
    url, process = start_registry_server(tmp_path_factory.mktemp("registry"), token=TOKEN)
    yield url
    stop_process(process)


def two_runs() -> Run:
    """A run with artifacts and metrics that depends on another one."""
    with Run(run_name="data") as data:
        data.log_dict({"rows": list(range(100))}, "data.json")
        data.log_metric("rows", 100)
    with Run(run_name="model") as model:
        model.add_dependency(data)
        model.log_metrics({"loss": 0.5, "acc": 0.9}, step=1)
        model.log_text("weights " * 1000, "model/weights.txt")
    return model


def pid_marked(folder: Path, pid: int) -> list[Path]:
    return [p for p in folder.iterdir() if f"pcs-{pid}-" in p.name] if folder.exists() else []


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch) -> Path:
    """The temp folder the test's processes use."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# -- export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bundle", "bundle.tar.gz"])
def test_sigterm_during_export_leaves_no_temp_files(tmp_path, hook, tmpdir_env, name):
    model = two_runs()
    out = tmp_path / "out"
    out.mkdir()
    process = hook.start("export", model.identifier, "-o", str(out / name),
                         PCS_TEST_PAUSE="get_metric_history:2")
    hook.wait_for("paused", process)
    assert pid_marked(out, process.pid), "the export stages its bundle next to the output"

    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)

    assert process.returncode == -signal.SIGTERM, err
    assert list(out.iterdir()) == []
    assert pid_marked(tmpdir_env, process.pid) == []
    assert pid_marked(Path(os.environ["PCS_HOME"]) / "exports", process.pid) == []


def test_a_killed_export_is_swept_by_the_next_one(tmp_path, hook, tmpdir_env):
    model = two_runs()
    out = tmp_path / "out"
    out.mkdir()
    killed = hook.start("export", model.identifier, "-o", str(out / "bundle.tar.gz"),
                        PCS_TEST_PAUSE="get_metric_history:2")
    hook.wait_for("paused", killed)
    killed.kill()
    killed.wait()
    (left,) = pid_marked(out, killed.pid)
    assert left.is_dir()  # SIGKILL gives no chance to clean up
    old = time.time() - 60
    os.utime(left, (old, old))

    transfer.export_bundle([model.identifier], out / "again.tar.gz")

    assert sorted(p.name for p in out.iterdir()) == ["again.tar.gz"]
    with tarfile.open(out / "again.tar.gz") as tar:
        assert "registry.yaml" in tar.getnames()


def test_a_failed_export_leaves_no_temp_files(tmp_path, tmpdir_env):
    model = two_runs()
    out = tmp_path / "out"
    out.mkdir()
    # the artifact store lost a file of the second run: the export fails midway
    artifacts = Path(model.info.artifact_uri.removeprefix("file://"))
    os.symlink(tmp_path / "gone", artifacts / "model" / "lost.bin")
    result = run_cli("export", model.identifier, "-o", str(out / "b.tar.gz"), check=False)
    assert result.returncode != 0
    assert list(out.iterdir()) == []
    assert [p for p in tmpdir_env.iterdir() if p.name.startswith("pcs-")] == []


# -- publish and pull ------------------------------------------------------------------------------


def test_sigterm_during_publish_and_pull_leaves_no_temp_files(
    tmp_path, hook, tmpdir_env, registry_server, template_store, monkeypatch
):
    from pcs.web_registry import WebRegistry

    model = two_runs()
    publish = hook.start("publish", model.identifier, "--to", registry_server,
                         PCS_TEST_PAUSE="add_run_artifacts:1", PCS_REGISTRY_TOKEN=TOKEN)
    hook.wait_for("paused", publish)
    assert pid_marked(tmpdir_env, publish.pid), "the publish stages each run's artifacts"
    publish.send_signal(signal.SIGTERM)
    _, err = publish.communicate(timeout=120)
    assert publish.returncode == -signal.SIGTERM, err
    assert pid_marked(tmpdir_env, publish.pid) == []

    run_cli("publish", model.identifier, "--to", registry_server, env={"PCS_REGISTRY_TOKEN": TOKEN})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(tmp_path / "b", template_store))
    pull = hook.start("pull", model.identifier, "--from", registry_server,
                      PCS_TEST_PAUSE="create_run:2")
    hook.wait_for("paused", pull)
    pull.send_signal(signal.SIGTERM)
    _, err = pull.communicate(timeout=120)
    assert pull.returncode == -signal.SIGTERM, err
    assert pid_marked(tmpdir_env, pull.pid) == []
    from mlflow import MlflowClient

    assert MlflowClient().search_runs(["0"]) == []  # the half-pulled runs were removed
    pulled = Run.from_registry(WebRegistry(registry_server), model.identifier)
    assert pulled.tags["pcs.imported_from"] == model.identifier


# -- secrets of runs recorded before URLs were cleaned -----------------------------------------------

SECRETS = ["ghp_SECRET1", "glpat-SECRET2", "SECRET3-password", "SECRET4-index"]
PLAIN_PY = "class Plain:\n    def go(self, n=2):\n        return n * 2\n"


def old_style_run(tmp_path: Path) -> Run:
    """A component run whose records carry credentials, as older versions of pcs wrote them."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain.py").write_text(PLAIN_PY, encoding="utf-8")
    component = Component.from_repo(LocalRepo("src", src), "plain", "plain.py", "Plain", instantiate=True)
    run = component.run_with_arg_set("go", {"plain": {"go": {"n": 3}}}, seed=1)
    client = run.client
    client.set_tag(run.identifier, "mlflow.source.git.repoURL",
                   f"https://oauth2:{SECRETS[0]}@git.example/team/m.git")
    client.set_tag(run.identifier, "pcs.error",
                   f"RepoError: fetch of https://x:{SECRETS[1]}@git.example/m.git failed")
    code = run.code_record
    code.setdefault("components", {}).setdefault("plain", {})["git"] = {
        "remote_url": f"https://deploy:{SECRETS[2]}@git.example/team/m.git", "commit": "0" * 40,
    }
    client.log_text(run.identifier, yaml.safe_dump(code), "pcs/code.yaml")
    command = yaml.safe_load(run.load_text("pcs/run_command.yaml"))
    command.setdefault("repos", {})["old_remote"] = {
        "type": "git", "url": f"https://git.example/m.git?private_token={SECRETS[1]}",
    }
    client.log_text(run.identifier, yaml.safe_dump(command), "pcs/run_command.yaml")
    client.log_text(
        run.identifier, f"--index-url https://me:{SECRETS[3]}@pypi.example/simple\ndill\n",
        "pcs/requirements/requirements.txt",
    )
    return Run.from_existing_run_id(run.identifier)


def assert_no_secret(data: bytes, where: str) -> None:
    for secret in SECRETS:
        assert secret.encode() not in data, f"{secret} reached {where}"


def test_secrets_of_an_old_run_reach_neither_bundles_nor_the_registry(
    tmp_path, template_store, monkeypatch, registry_server
):
    from pcs.web_registry import WebRegistry

    run = old_style_run(tmp_path)
    assert SECRETS[0] in run.tags["mlflow.source.git.repoURL"]  # the store still holds them

    folder = tmp_path / "bundle"
    archive = tmp_path / "bundle.tar.gz"
    transfer.export_bundle([run.identifier], folder)
    transfer.export_bundle([run.identifier], archive)
    registry = WebRegistry(registry_server, token=TOKEN)
    transfer.export_runs_by_id([run.identifier], registry)

    for path in folder.rglob("*"):
        if path.is_file():
            assert_no_secret(path.read_bytes(), str(path))
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile():
                assert_no_secret(tar.extractfile(member).read(), f"{archive}:{member.name}")
    for section in ("runs", "run_commands", "repos", "components"):
        for identifier in registry.identifiers(section):
            assert_no_secret(repr(registry.get_spec(section, identifier)).encode(), section)
    published = registry.run_artifacts_dir(run.identifier)
    for path in published.rglob("*"):
        if path.is_file():
            assert_no_secret(path.read_bytes(), f"the registry's {path}")
    spec = yaml.safe_load((folder / "registry.yaml").read_text(encoding="utf-8"))["runs"][run.identifier]
    assert spec["tags"]["mlflow.source.git.repoURL"] == "https://git.example/team/m.git"
    code = yaml.safe_load((folder / "artifacts" / run.identifier / "pcs" / "code.yaml").read_text())
    assert code["components"]["plain"]["git"]["remote_url"] == "https://git.example/team/m.git"

    # what was written holds together: its checks pass, and the run reruns elsewhere
    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(tmp_path / "b", template_store))
    imported = Run.from_existing_run_id(transfer.import_bundle(archive)[run.identifier])
    assert imported.tags["mlflow.source.git.repoURL"] == "https://git.example/team/m.git"
    assert imported.return_value == 6
    requirements = imported.load_text("pcs/requirements/requirements.txt")
    assert requirements == "--index-url https://pypi.example/simple\ndill\n"
