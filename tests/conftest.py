"""Test isolation and real servers.

Every test gets its own working directory, ``PCS_HOME`` and SQLite MLflow
store (a copy of a store migrated once per session, so a test does not pay
for MLflow's schema migrations). ``store`` runs a test twice: on that SQLite
store and on a real ``mlflow server`` process on 127.0.0.1 started once per
session (marked ``mlflow_server``; deselect with ``-m 'not mlflow_server'``).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """Keep tests that share an expensive fixture on one pytest-xdist worker.

    The suite runs on two workers (``-n 2 --dist loadgroup``). Tests on a local
    Ray share one cluster, tests on PostgreSQL share the server (some restart
    it), and tests of a module with a module-scoped fixture (a server, a store)
    share that fixture: each group goes to one worker, so nothing expensive is
    started twice and no test sees another's restart. Without xdist the marks
    do nothing.
    """
    for item in items:
        group = _xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session, exitstatus):
    """Stop the shared registry servers here: an xdist worker may end without running atexit."""
    shared = sys.modules.get("_registry_server")
    if shared is not None:
        shared.stop_shared()


def _xdist_group(item) -> str | None:
    names = getattr(item, "fixturenames", ())
    if "local_ray" in names:
        return "ray"
    if item.get_closest_marker("postgres") is not None:
        return "postgres"
    info = getattr(item, "_fixtureinfo", None)
    for name in names:
        defs = info.name2fixturedefs.get(name) if info is not None else None
        if defs and defs[-1].scope in ("module", "class", "package"):
            return f"module:{item.module.__name__}"
    return None


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` (as a test author, never signing); its output, stripped."""
    return subprocess.run(
        ["git", "-c", "user.name=pcs tests", "-c", "user.email=tests@example.invalid",
         "-c", "commit.gpgsign=false", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()


def git_init(folder: Path) -> Path:
    """Make ``folder`` (created when missing) a git repository on branch ``main``."""
    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "-q", "-b", "main")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server process exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} did not answer within {timeout}s")


def mlflow_server_env() -> dict[str, str]:
    """The environment for an ``mlflow server`` the tests start.

    No ``MLFLOW_*`` variable of the test leaks in, and MLflow 3's job runner is
    off: pcs uses no server-side jobs, and the runner starts about eight worker
    processes per server that would compete with the tests for the CPU.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def template_store(tmp_path_factory) -> Path:
    """A SQLite MLflow store with MLflow's schema already migrated."""
    folder = tmp_path_factory.mktemp("template_store")
    db = folder / "mlflow.db"
    code = (
        "from mlflow import MlflowClient; "
        f"MlflowClient(tracking_uri='sqlite:///{db}').search_experiments()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=folder, capture_output=True)
    return db


def _clean_env(monkeypatch) -> None:
    for key in list(os.environ):
        if key.startswith(("MLFLOW_", "PCS_")):
            monkeypatch.delenv(key, raising=False)


def make_store(folder: Path, template_store: Path) -> str:
    """A fresh SQLite store in ``folder`` (a copy of the migrated template); its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    shutil.copy(template_store, db)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (str(folder / "mlruns" / "0"),),
        )
    return f"sqlite:///{db}"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, template_store):
    """Own cwd, PCS_HOME and SQLite tracking store for every test."""
    _clean_env(monkeypatch)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("PCS_HOME", str(tmp_path / "pcs_home"))
    uri = make_store(tmp_path, template_store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(fluent, "_active_experiment_id", None, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None, raising=False)
    yield uri
    # runs left active by a failing test must not leak into the next one
    fluent._active_run_stack.get().clear()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite backend and proxied artifacts."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    env = mlflow_server_env()
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{folder / 'backend.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process, timeout=120)
    except RuntimeError:
        stop_process(process)
        log.close()
        raise RuntimeError((folder / "server.log").read_text()[-3000:]) from None
    yield url
    stop_process(process)
    log.close()


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.mlflow_server)])
def store(request, monkeypatch, isolated):
    """The tracking store under test: the per-test SQLite store, or the session's mlflow server.

    On the server each test gets its own experiment, so tests never see each
    other's runs.
    """
    if request.param == "sqlite":
        yield isolated
        return
    url = request.getfixturevalue("mlflow_server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    from mlflow import MlflowClient

    experiment_id = MlflowClient(tracking_uri=url).create_experiment(f"test-{uuid.uuid4().hex}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    yield url


def component_from_source(tmp_path: Path, name: str, source: str, class_name: str):
    """A component of class ``class_name`` in ``<tmp_path>/src/<name>.py`` holding ``source``."""
    from pcs import Component, LocalRepo

    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return Component.from_repo(LocalRepo("src", folder), name, f"{name}.py", class_name, instantiate=True)


def pcs_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """The ``pcs`` console script's entry point, in-process: (exit code, stdout, stderr)."""
    result = _call_in_process(capsys, args)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def cli(capsys):
    """``run_cli`` in this process: same arguments, its result, without a fresh interpreter.

    For tests of what a command does, where no process boundary is under test:
    a ``pcs`` subprocess spends about 2 s importing MLflow, hundreds of times a
    suite. What it cannot see, so a test about it keeps ``run_cli``: output
    written below Python (file descriptors 1 and 2: C code, subprocesses, the
    ``--json`` redirection of a component's output), anything a fresh process
    does once (MLflow's logging set up at import, caches of sources and
    records, secrets it has not been given), exit by a signal. Warnings logged
    during the call reach its stderr, as in a process without logging set up.
    The working directory, ``os.environ`` (the CLI sets MLflow's variables),
    stdin and MLflow's fluent state are put back after each call, and a call
    that leaves an MLflow run active fails the test.
    """

    def call(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True,
             input: str | None = None) -> subprocess.CompletedProcess:
        result = _call_in_process(capsys, args, cwd=cwd, env=env, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"pcs {' '.join(args)} exited {result.returncode}\n"
                                 f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    return call


def _call_in_process(capsys, args: tuple[str, ...], cwd: Path | None = None, env: dict | None = None,
                     input: str | None = None) -> subprocess.CompletedProcess:
    import io
    import logging

    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from pcs.cli import main

    saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
    saved_uri = tracking_utils._tracking_uri
    saved_fluent = {name: getattr(fluent, name, None)
                    for name in ("_active_experiment_id", "_last_active_run_id")}
    stack = fluent._active_run_stack.get()
    saved_stack = list(stack)
    # without pytest's handlers on the root logger, a warning nobody handles goes to
    # sys.stderr (logging.lastResort), as in a pcs process
    saved_handlers = logging.root.handlers[:]
    logging.root.handlers.clear()
    capsys.readouterr()
    try:
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        sys.stdin = io.StringIO(input or "")
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:  # as the interpreter turns it into an exit status
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code & 0xFF
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    finally:
        logging.root.handlers[:] = saved_handlers
        sys.stdin = saved_stdin
        os.chdir(saved_cwd)
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        for key, value in saved_env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        tracking_utils._tracking_uri = saved_uri
        for name, value in saved_fluent.items():
            setattr(fluent, name, value)
        leaked = [run.info.run_id for run in stack[len(saved_stack):]]
        stack[:] = saved_stack
    out, err = capsys.readouterr()
    if leaked:
        raise AssertionError(f"pcs {' '.join(args)} left MLflow run(s) {leaked} active\n"
                             f"stdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(["pcs", *args], code, out, err)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run the ``pcs`` CLI as a user would, in a subprocess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "pcs", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, input=input, timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"pcs {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\n"
            f"stderr:\n{result.stderr}"
        )
    return result


# components.yaml of a project whose work.py holds a class Work (sweep tests)
WORK_REGISTRY = """
repos:
  src:
    type: local
    path: .
components:
  work:
    repo: src
    file_path: work.py
    class_name: Work
    instantiate: true
"""

@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the whole session (2 CPUs); its workers import this checkout of pcs.

    Shared by every test file that sweeps on Ray (here, so no file starts a second one).
    """
    import ray

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), saved]))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    yield
    ray.shutdown()
