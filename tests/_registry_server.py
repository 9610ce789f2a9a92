"""Start a real ``pcs-registry serve`` process on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from conftest import REPO_ROOT, free_port, stop_process, wait_for_http

__all__ = ["start_registry_server", "stop_process"]


def start_registry_server(
    folder: Path,
    db_url: str | None = None,
    token: str | None = "secret",
    extra_args: Sequence[str] = (),
) -> tuple[str, subprocess.Popen]:
    """Start the registry server in ``folder`` and wait until it answers.

    Specs go to ``db_url`` (default: ``folder/registry.db``), artifacts to
    ``folder/artifacts``, output to ``folder/server.log``. ``token=None``
    starts a read-only server. Returns ``(base_url, process)``; stop it with
    :func:`stop_process`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        sys.executable, "-m", "registry.cli", "serve",
        "--db", db_url or f"sqlite:///{folder / 'registry.db'}",
        "--artifacts", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]
    if token is not None:
        args += ["--token", token]
    args += list(extra_args)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PCS_", "MLFLOW_"))}
    # the package need not be installed for 'python -m registry.cli'
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log_path = folder / "server.log"
    with open(log_path, "w") as log:  # the child keeps its own handle
        process = subprocess.Popen(args, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/api/v1/health", process, timeout=60)
    except RuntimeError as exc:
        stop_process(process)
        raise RuntimeError(f"{exc}\nserver log:\n{log_path.read_text()[-3000:]}") from None
    return url, process
