"""A run rides out a tracking-server outage: a real ``mlflow server`` killed and restarted mid-run.

The run logs a metric every 100 ms in a child process; the test SIGKILLs the
server's whole process group when told, and starts it again on the same port
with the same backend. Within ``PCS_STORE_RETRY_S`` every point arrives, in
order; beyond it the run ends FAILED with the outage named, keeping what was
written. The same holds when the server stays up and the PostgreSQL database
behind it goes away for seconds (what a database restart does to the server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import free_port, mlflow_server_env, wait_for_http

pytestmark = pytest.mark.mlflow_server

CHILD = textwrap.dedent(
    """
    import sys, time
    from pcs import Run

    points = int(sys.argv[1])
    with Run(run_name="outage") as run:
        print("RUN", run.identifier, flush=True)
        for i in range(points):
            run.log_metric("x", i * 0.5, step=i)
            if i == 10:
                print("KILL", flush=True)
            time.sleep(0.1)
    print("DONE", flush=True)
    """
)


class Server:
    """An ``mlflow server`` that can be killed (its whole process group) and started again."""

    def __init__(self, folder: Path, backend: str | None = None) -> None:
        self.folder = folder
        self.backend = backend or f"sqlite:///{folder / 'backend.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.folder / "server.log", "a")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", self.backend,
             "--artifacts-destination", str(self.folder / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=self.folder, env=mlflow_server_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for_http(f"{self.url}/health", self.process, timeout=180)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("outage_server"))
    srv.start()
    yield srv
    srv.kill()


def _run_child(server: Server, tmp_path: Path, points: int, outage_s: float,
               env: dict[str, str], outage=None) -> tuple[subprocess.CompletedProcess, str]:
    """Run the logging child; when it says KILL, make the outage (by default: kill the
    server, start it again after ``outage_s``)."""
    if server.process is None:
        server.start()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    full_env.update({"MLFLOW_TRACKING_URI": server.url, "PCS_HOME": str(tmp_path / "home"), **env})
    child = subprocess.Popen(
        [sys.executable, str(script), str(points)], cwd=tmp_path, env=full_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    run_id = ""
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("RUN "):
                run_id = line.split()[1]
            if line.strip() == "KILL":
                if outage is not None:
                    outage(outage_s)
                    break
                server.kill()
                time.sleep(outage_s)
                server.start()
                break
        out, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, out, err), run_id


def _assert_finished_with_every_point(server: Server, result: subprocess.CompletedProcess,
                                      run_id: str, points: int) -> None:
    """The child ended well, its run FINISHED, and every point arrived once, in order."""
    from mlflow import MlflowClient

    assert result.returncode == 0, result.stderr[-3000:]
    assert "DONE" in result.stdout
    client = MlflowClient(tracking_uri=server.url)
    assert client.get_run(run_id).info.status == "FINISHED"
    history = sorted(client.get_metric_history(run_id, "x"), key=lambda m: (m.timestamp, m.step))
    assert [m.step for m in history] == list(range(points))
    assert [m.value for m in history] == [i * 0.5 for i in range(points)]


def test_a_run_logging_through_a_server_restart_keeps_every_point_in_order(server, tmp_path):

    result, run_id = _run_child(server, tmp_path, 80, 5.0, {"PCS_METRIC_FLUSH_S": "0.2"})

    _assert_finished_with_every_point(server, result, run_id, 80)


def test_an_outage_longer_than_the_retry_window_ends_the_run_failed_naming_it(server, tmp_path):
    from mlflow import MlflowClient

    result, run_id = _run_child(
        server, tmp_path, 400, 8.0, {"PCS_STORE_RETRY_S": "3", "PCS_METRIC_FLUSH_S": "0.2"}
    )

    assert result.returncode != 0
    assert "StoreOutageError" in result.stderr and "PCS_STORE_RETRY_S" in result.stderr
    assert "DONE" not in result.stdout
    client = MlflowClient(tracking_uri=server.url)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    error = run.data.tags["pcs.error"]
    assert "did not answer" in error and "PCS_STORE_RETRY_S" in error
    # what was logged before the outage is kept, in order
    steps = sorted(m.step for m in client.get_metric_history(run_id, "x"))
    assert steps[:11] == list(range(11))
    assert steps == list(range(len(steps)))


@pytest.mark.postgres
def test_a_run_rides_out_the_postgresql_database_behind_the_server_going_away(tmp_path):
    """The server stays up; its PostgreSQL database drops every connection and refuses new
    ones for 5 s, as a database restart does to it; then it answers again."""
    from _registry_server import PG_URL, postgres_database

    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    backend = postgres_database()
    name = backend.rsplit("/", 1)[1]
    folder = tmp_path / "server"
    folder.mkdir()
    server = Server(folder, backend)
    admin = psycopg2.connect(PG_URL, connect_timeout=3)
    admin.autocommit = True

    def database_away(seconds: float) -> None:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                           (name,))
            try:
                time.sleep(seconds)
            finally:
                cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    try:
        server.start()
        result, run_id = _run_child(server, tmp_path, 80, 5.0, {"PCS_METRIC_FLUSH_S": "0.2"},
                                    outage=database_away)
        _assert_finished_with_every_point(server, result, run_id, 80)
    finally:
        server.kill()
        admin.close()
