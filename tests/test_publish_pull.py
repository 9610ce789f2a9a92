"""Publish -> pull -> rerun through a real registry server, and the team-scale path on PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from _registry_server import start_registry_server
from conftest import free_port, make_store, mlflow_server_env, run_cli, stop_process, wait_for_http

from pcs import Component, LocalRepo, Run
from pcs.web_registry import WebRegistry

PIPELINE = """
import random

class Prepare:
    def make(self, n=4):
        from pcs import active_component_run
        values = [random.randint(0, 100) for _ in range(n)]
        active_component_run(self).log_dict({"values": values}, "data.json")
        return values

class Train:
    def fit(self, data_run_id, epochs=3):
        from pcs import Run, active_component_run
        me = active_component_run(self)
        values = Run.from_existing_run_id(data_run_id).load_dict("data.json")["values"]
        total = 0.0
        for epoch in range(epochs):
            with Run(run_name=f"epoch-{epoch}") as inner:
                total += sum(values) * random.random()
                inner.log_metric("total", total)
            me.log_metric("total", total, step=epoch)
        return round(total, 6)
"""


def make_pipeline(folder: Path) -> tuple[Run, Run]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
    repo = LocalRepo("pipeline_src", folder)
    prepare = Component.from_repo(repo, "prepare", "pipeline.py", "Prepare", instantiate=True)
    train = Component.from_repo(repo, "train", "pipeline.py", "Train", instantiate=True)
    data = prepare.run_with_arg_set("make", {"prepare": {"make": {"n": 5}}}, seed=1)
    model = train.run_with_arg_set("fit", {"train": {"fit": {"data_run_id": data.identifier}}}, seed=2)
    return data, model


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory):
    url, process = start_registry_server(tmp_path_factory.mktemp("registry"), token="team-token")
    yield url
    stop_process(process)


def test_publish_pull_rerun_through_the_server(registry_server, tmp_path, monkeypatch, template_store,
                                               cli):
    src = tmp_path / "machine_a" / "src"
    data, model = make_pipeline(src)
    original_total = model.return_value

    refused = cli("publish", model.identifier, "--to", registry_server, check=False)
    assert refused.returncode != 0 and "token" in refused.stderr and "Traceback" not in refused.stderr
    assert WebRegistry(registry_server).identifiers("runs") == []  # nothing left behind

    cli("publish", model.identifier, "--to", registry_server, env={"PCS_REGISTRY_TOKEN": "team-token"})
    published = set(WebRegistry(registry_server).identifiers("runs"))
    assert {model.identifier, data.identifier} <= published  # the dependency came along
    assert len(published) == 2 + 3  # plus the three inner epoch runs

    # machine B: another store, another directory, and the sources are gone; a fresh process
    # (pull and rerun), so nothing this one loaded from machine A can stand in for the record
    shutil.rmtree(src)
    machine_b = tmp_path / "machine_b"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(machine_b, template_store))
    monkeypatch.chdir(machine_b)
    pulled_id = run_cli("pull", model.identifier, "--from", registry_server).stdout.strip().splitlines()[-1]
    pulled = Run.from_existing_run_id(pulled_id)
    assert pulled.tags["pcs.imported_from"] == model.identifier
    assert pulled.return_value == original_total
    assert [r.tags["pcs.imported_from"] for r in pulled.dependency_runs] == [data.identifier]
    assert len(pulled.inner_runs) == 3

    result = run_cli("rerun", model.identifier, "--verify")
    assert "reproduced" in result.stdout
    again = run_cli("pull", model.identifier, "--from", registry_server).stdout.strip().splitlines()[-1]
    assert again == pulled_id  # pulling twice does not duplicate


# -- team scale: an mlflow server and the registry server, both on PostgreSQL ----------------


def _postgres_admin():
    import psycopg2  # a test dependency: missing it is an install error, not a skip

    try:
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers on 127.0.0.1:5432 ({exc})")
    conn.autocommit = True
    return conn


@pytest.fixture
def postgres_databases():
    conn = _postgres_admin()
    names = [f"pcs_team_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f'CREATE DATABASE "{name}"')
    yield [f"postgresql+psycopg2://postgres@127.0.0.1:5432/{n}" for n in names]
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.mark.postgres
def test_team_path_on_postgresql(postgres_databases, tmp_path, monkeypatch):
    mlflow_db, registry_db = postgres_databases
    port = free_port()
    env = mlflow_server_env()
    log = open(tmp_path / "mlflow.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow_db,
         "--artifacts-destination", str(tmp_path / "mlflow_artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    registry_url, registry = start_registry_server(tmp_path / "registry", db_url=registry_db, token="t")
    try:
        mlflow_url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{mlflow_url}/health", server, timeout=180)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        data, model = make_pipeline(tmp_path / "src")
        assert Run.from_existing_run_id(model.identifier).rerun(verify=True).verification.reproduced
        model.to_registry(WebRegistry(registry_url, token="t"), include_artifacts=True)
        # a colleague with their own embedded store pulls and reruns
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'colleague.db'}")
        monkeypatch.chdir(tmp_path)
        pulled = Run.from_registry(WebRegistry(registry_url), model.identifier)
        assert pulled.return_value == model.return_value
        assert pulled.rerun(verify=True).verification.reproduced
    finally:
        stop_process(server)
        stop_process(registry)
        log.close()


def test_publishing_a_changed_run_needs_force(registry_server, monkeypatch, cli):
    monkeypatch.setenv("PCS_REGISTRY_TOKEN", "team-token")
    with Run(run_name="growing") as run:
        run.log_metric("m", 1.0)
    cli("publish", run.identifier, "--to", registry_server)
    with Run.from_existing_run_id(run.identifier) as resumed:
        resumed.log_metric("m", 2.0, step=1)
    refused = cli("publish", run.identifier, "--to", registry_server, check=False)
    assert refused.returncode != 0 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    cli("publish", run.identifier, "--to", registry_server, "--force")
    spec = WebRegistry(registry_server).get_run_record(run.identifier)
    assert [point[0] for point in spec["metrics"]["m"]] == [1.0, 2.0]
