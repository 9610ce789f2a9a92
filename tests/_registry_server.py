"""Real ``pcs-registry serve`` processes on 127.0.0.1 (and PostgreSQL databases) for tests.

:func:`shared_registry_server` starts one server per configuration for the
whole session, whichever test module asks first; tests that stop, kill or
reconfigure a server start their own with :func:`start_registry_server`.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import REPO_ROOT, free_port, stop_process, wait_for_http

__all__ = [
    "TOKEN",
    "PG_URL",
    "start_registry_server",
    "shared_registry_server",
    "stop_shared",
    "postgres_database",
    "stop_process",
]

TOKEN = "secret"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
_SHARED: dict[str, tuple[str, Path, subprocess.Popen]] = {}
_DATABASES: dict[str, str] = {}


def start_registry_server(
    folder: Path,
    db_url: str | None = None,
    token: str | None = "secret",
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> tuple[str, subprocess.Popen]:
    """Start the registry server in ``folder`` and wait until it answers.

    Specs go to ``db_url`` (default: ``folder/registry.db``), artifacts to
    ``folder/artifacts``, output to ``folder/server.log`` (appended to, so a
    restarted server keeps the log of the first). The token goes through
    ``PCS_REGISTRY_TOKEN``, never the command line; ``token=None`` starts a
    read-only server. ``env`` adds environment variables. Returns
    ``(base_url, process)``; stop it with :func:`stop_process`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        sys.executable, "-m", "registry.cli", "serve",
        "--db", db_url or f"sqlite:///{folder / 'registry.db'}",
        "--artifacts", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]
    args += list(extra_args)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("PCS_", "MLFLOW_"))}
    if token is not None:
        child_env["PCS_REGISTRY_TOKEN"] = token
    child_env.update(env or {})
    # the package need not be installed for 'python -m registry.cli'
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")])
    )
    log_path = folder / "server.log"
    with open(log_path, "a") as log:  # the child keeps its own handle
        process = subprocess.Popen(
            args, cwd=folder, env=child_env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/api/v1/health", process, timeout=60)
    except RuntimeError as exc:
        stop_process(process)
        raise RuntimeError(f"{exc}\nserver log:\n{log_path.read_text()[-3000:]}") from None
    return url, process


def shared_registry_server(tmp_path_factory: pytest.TempPathFactory,
                           backend: str = "sqlite") -> tuple[str, Path]:
    """``(base URL, folder)`` of the session's server on ``backend`` (token :data:`TOKEN`).

    ``backend`` is ``"sqlite"`` or ``"postgres"`` (skips when no PostgreSQL
    answers). The server runs until the test process exits. Tests using it
    must use fresh identifiers and run ids, since other tests share it.
    """
    if backend not in _SHARED or _SHARED[backend][2].poll() is not None:
        db_url = postgres_database("shared") if backend == "postgres" else None
        folder = tmp_path_factory.mktemp(f"registry_{backend}")
        url, process = start_registry_server(folder, db_url=db_url, token=TOKEN)
        atexit.register(stop_process, process)  # also stopped at the session's end (conftest)
        _SHARED[backend] = (url, folder, process)
    url, folder, _ = _SHARED[backend]
    return url, folder


def stop_shared() -> None:
    """Stop the session's shared servers (at the end of the session, before the worker exits)."""
    while _SHARED:
        _, (_, _, process) = _SHARED.popitem()
        stop_process(process)


def postgres_database(key: str | None = None) -> str:
    """The URL of a fresh PostgreSQL database, dropped when the test process exits.

    The same ``key`` gives the same database for the session; ``None`` always
    a new one. Skips the test when no PostgreSQL answers at :data:`PG_URL`.
    """
    if key is not None and key in _DATABASES:
        return _DATABASES[key]
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    try:
        conn = psycopg2.connect(PG_URL, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL does not answer at {PG_URL}: {str(exc).strip()}")
    conn.autocommit = True
    name = f"pcs_reg_{uuid.uuid4().hex[:12]}"
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()

    def drop() -> None:
        # after the servers using it stopped (atexit runs in reverse order)
        admin = psycopg2.connect(PG_URL, connect_timeout=3)
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()

    atexit.register(drop)
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    if key is not None:
        _DATABASES[key] = url
    return url
