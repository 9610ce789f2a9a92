"""Imports are all or nothing per run and happen once per store: killed, interrupted or concurrent.

Real ``pcs import`` processes are killed (SIGKILL), interrupted (SIGTERM) or run
four at a time against one store: a SQLite file, a real ``mlflow server``
(marked ``mlflow_server``) and an ``mlflow server`` on PostgreSQL (marked
``postgres``; skipped with the reason when no PostgreSQL answers on
127.0.0.1:5432). To stop an import at a known point, the processes load a
small hook module (:data:`HOOK`) that pauses MlflowClient at the n-th call of
a method, or holds every importer at a barrier before its first claim.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    REPO_ROOT,
    free_port,
    make_store,
    mlflow_server_env,
    stop_process,
    wait_for_http,
)

from pcs import Run, RunNotFoundError, TrackingStoreError, transfer
from pcs._liveness import this_host
from pcs.transfer import _claims

# -- a hook the import processes load -----------------------------------------------------------

HOOK = r'''
"""Pause or slow MlflowClient (and WebRegistry) in this process (see PCS_TEST_* below)."""
import os
import time
from pathlib import Path

from mlflow.tracking.client import MlflowClient

from pcs.web_registry import WebRegistry

_DIR = Path(os.environ["PCS_TEST_HOOK_DIR"])
# "method:n": after the n-th call of the method returns, write paused-<pid>
# and wait for the file resume-<pid> (or 600 s)
_PAUSE = os.environ.get("PCS_TEST_PAUSE", "")
# seconds every log_batch waits first, so imports last long enough to overlap
_DELAY = float(os.environ.get("PCS_TEST_DELAY", "0") or 0)
# write ready-<pid> and wait for this file before the first experiment is created
_GO = os.environ.get("PCS_TEST_GO")
_calls = {}


def _mark(name):
    (_DIR / f"{name}-{os.getpid()}").write_text(str(time.time()))


def _wrap(cls, name):
    original = getattr(cls, name)

    def hooked(self, *args, **kwargs):
        if name == "create_experiment" and _GO and not _calls.get("go"):
            _calls["go"] = 1
            _mark("ready")
            while not os.path.exists(_GO):
                time.sleep(0.01)
        if name == "log_batch" and _DELAY:
            time.sleep(_DELAY)
        result = original(self, *args, **kwargs)
        _calls[name] = _calls.get(name, 0) + 1
        method, _, n = _PAUSE.partition(":")
        if method == name and _calls[name] == int(n):
            _mark("paused")
            deadline = time.time() + 600
            while time.time() < deadline and not (_DIR / f"resume-{os.getpid()}").exists():
                time.sleep(0.02)
        return result

    setattr(cls, name, hooked)


for _name in ("create_run", "log_batch", "create_experiment", "get_metric_history"):
    _wrap(MlflowClient, _name)
# export reads histories from the store a page at a time, below the client
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: E402

_wrap(SqlAlchemyStore, "get_metric_history")
_wrap(WebRegistry, "add_run_artifacts")
'''


@dataclass
class Hook:
    """Where the hook module lives and where it leaves its marks."""

    folder: Path

    def env(self, **settings: str) -> dict[str, str]:
        paths = [str(self.folder), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PCS_TEST_")}
        env.update(PYTHONPATH=os.pathsep.join(p for p in paths if p), PCS_TEST_HOOK_DIR=str(self.folder))
        env.update(settings)
        return env

    def start(self, *args: str, **settings: str) -> subprocess.Popen:
        """``pcs ARGS`` in a process that loads the hook first."""
        code = "import pcs_test_hook, sys; from pcs.cli import main; sys.argv[0] = 'pcs'; main()"
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], env=self.env(**settings),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def wait_for(self, name: str, process: subprocess.Popen, timeout: float = 120) -> None:
        mark = self.folder / f"{name}-{process.pid}"
        deadline = time.time() + timeout
        while not mark.exists():
            if process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"process exited {process.returncode} before {name}:\n{out}\n{err}")
            if time.time() > deadline:
                raise AssertionError(f"process did not reach {name} within {timeout}s")
            time.sleep(0.02)

    def resume(self, process: subprocess.Popen) -> None:
        (self.folder / f"resume-{process.pid}").write_text("go")


@pytest.fixture
def hook(tmp_path) -> Hook:
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "pcs_test_hook.py").write_text(HOOK, encoding="utf-8")
    return Hook(folder)


# -- the stores imported into -------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_mlflow_server(tmp_path_factory):
    """An ``mlflow server`` on a fresh PostgreSQL database, for this module."""
    import psycopg2  # a test dependency: missing it is an install error, not a skip

    try:
        admin = psycopg2.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3
        )
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers on 127.0.0.1:5432 ({str(exc).strip()})")
    admin.autocommit = True
    name = f"pcs_claims_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    folder = tmp_path_factory.mktemp("mlflow_pg")
    port = free_port()
    env = mlflow_server_env()
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}",
         "--artifacts-destination", str(folder / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)
        log.close()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@dataclass
class Setup:
    """A bundle made in the test's own store, and the store it is imported into."""

    bundle: Path
    originals: list[str]
    records: dict[str, dict]
    uri: str

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


def record_of(client, run_id: str) -> dict:
    """What an import must carry over (link tags aside, which hold other ids)."""
    run = client.get_run(run_id)
    skip = {"pcs.imported_from", "pcs.origin_run_id", "mlflow.parentRunId", "pcs.depends_on"}
    return {
        "name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": dict(run.data.params),
        "tags": {k: v for k, v in run.data.tags.items() if k not in skip},
        "metrics": {
            key: sorted((m.value, m.step, m.timestamp) for m in client.get_metric_history(run_id, key))
            for key in run.data.metrics
        },
        "artifacts": sorted(Run.lazy(run_id, client).artifact_paths()),
    }


def make_bundle(tmp_path: Path, inner: int = 4, archive: bool = False) -> tuple[Path, list[str], dict]:
    """A data run and a training run with ``inner`` inner runs, exported with artifacts."""
    from mlflow import MlflowClient

    with Run(run_name="data") as data:
        data.log_dict({"rows": [1, 2, 3]}, "data.json")
        data.log_param("rows", 3)
    with Run(run_name="train") as outer:
        outer.add_dependency(data)
        outer.log_params({"lr": 0.1, "epochs": inner})
        for i in range(inner):
            with Run(run_name=f"epoch-{i}") as epoch:
                epoch.log_params({"epoch": i})
                for step in range(3):
                    epoch.log_metrics({"loss": 1 / (i + step + 1)}, step=step)
                epoch.log_dict({"epoch": i}, f"epochs/{i}.json")
            outer.log_metric("loss", 1 / (i + 1), step=i)
    bundle = tmp_path / ("bundle.tar.gz" if archive else "bundle")
    result = transfer.export_bundle([outer.identifier], bundle)
    client = MlflowClient()
    records = {run_id: record_of(client, run_id) for run_id in result.run_ids}
    return bundle, sorted(result.run_ids), records


def setup_target(kind: str, request, tmp_path: Path, template_store: Path, monkeypatch,
                 archive: bool = False) -> Setup:
    bundle, originals, records = make_bundle(tmp_path, archive=archive)
    if kind == "sqlite":
        uri = make_store(tmp_path / "target", template_store)
    else:
        from mlflow import MlflowClient

        uri = request.getfixturevalue("mlflow_server" if kind == "server" else "postgres_mlflow_server")
        experiment = MlflowClient(tracking_uri=uri).create_experiment(f"claims-{uuid.uuid4().hex}")
        monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # the temp folder of the import processes, and of imports in this one
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return Setup(bundle, originals, records, uri)


ALL_STORES = [
    "sqlite",
    pytest.param("server", marks=pytest.mark.mlflow_server),
    pytest.param("postgres", marks=[pytest.mark.mlflow_server, pytest.mark.postgres]),
]


def experiment_ids(client) -> list[str]:
    from mlflow.entities import ViewType

    chosen = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if chosen:
        return [chosen]
    return [
        e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)
        if not e.name.startswith(".pcs-")
    ]


def runs_of(setup: Setup) -> list:
    """Every run in the experiments the test imports into, deleted ones included."""
    from mlflow.entities import ViewType

    client = setup.client()
    return list(client.search_runs(experiment_ids(client), run_view_type=ViewType.ALL, max_results=1000))


def assert_one_complete_copy_each(setup: Setup, mapping: dict[str, str]) -> None:
    """Each original id has exactly one complete copy; nothing half-written is left active."""
    client = setup.client()
    runs = runs_of(setup)
    active = [r for r in runs if r.info.lifecycle_stage == "active"]
    copies: dict[str, list[str]] = {}
    for run in active:
        copies.setdefault(run.data.tags.get("pcs.imported_from"), []).append(run.info.run_id)
    assert {o: len(copies.get(o, [])) for o in setup.originals} == dict.fromkeys(setup.originals, 1)
    assert None not in copies, "an active run without pcs.imported_from is left"
    assert not [r for r in runs if r.data.tags.get("pcs.importing")], "a run still marked importing"
    for original in setup.originals:
        assert copies[original] == [mapping[original]]
        assert record_of(client, mapping[original]) == setup.records[original]
    imported = {mapping[o]: o for o in setup.originals}
    for original in setup.originals:
        tags = client.get_run(mapping[original]).data.tags
        for key in ("mlflow.parentRunId", "pcs.depends_on"):
            if key in setup.records[original]["tags"] or key in tags:
                # links point at the copies, never at runs of the source store
                assert not any(o in tags.get(key, "") for o in setup.originals), (key, tags[key])
                assert any(i in tags[key] for i in imported), (key, tags[key])


def active_claims(setup: Setup, pids: list[int] | None = None) -> list[str]:
    """Names of the claims on this bundle's runs (and holders of ``pids``) still held."""
    client = setup.client()
    names = [e.name for e in client.search_experiments() if e.name.startswith(".pcs-")]
    ours = [n for n in names if any(n.startswith(f"{_claims.CLAIM_PREFIX}{o}#") for o in setup.originals)]
    for pid in pids or []:
        ours += [n for n in names if n.startswith(f"{_claims.HOLDER_PREFIX}{this_host()}/{pid}/")]
    return ours


def leftovers(setup: Setup, pid: int) -> list[Path]:
    tmp = Path(os.environ["TMPDIR"])
    bundle_dir = setup.bundle.parent
    return [p for folder in (tmp, bundle_dir) for p in folder.iterdir() if f"pcs-{pid}-" in p.name]


def mapping_of(output: str) -> dict[str, str]:
    return dict(line.split(" -> ") for line in output.strip().splitlines())


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_STORES)
def test_four_concurrent_imports_leave_one_copy_of_each_run(
    kind, request, tmp_path, template_store, monkeypatch, hook
):
    setup = setup_target(kind, request, tmp_path, template_store, monkeypatch)
    go = tmp_path / "go"
    processes = [
        hook.start("import", str(setup.bundle), PCS_TEST_GO=str(go), PCS_TEST_DELAY="0.02")
        for _ in range(4)
    ]
    try:
        # every importer has looked the runs up (and found none) before any claims one
        for process in processes:
            hook.wait_for("ready", process)
        go.write_text("go")
        results = [process.communicate(timeout=300) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
    mappings = [mapping_of(out) for out, _ in results]
    assert all(m == mappings[0] for m in mappings)
    assert sorted(mappings[0]) == setup.originals
    assert_one_complete_copy_each(setup, mappings[0])
    assert active_claims(setup, [p.pid for p in processes]) == []


# -- a killed importer ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_STORES)
def test_a_sigkilled_import_is_completed_by_the_next_one(
    kind, request, tmp_path, template_store, monkeypatch, hook
):
    setup = setup_target(kind, request, tmp_path, template_store, monkeypatch, archive=True)
    killed = hook.start("import", str(setup.bundle), PCS_TEST_PAUSE="create_run:3")
    hook.wait_for("paused", killed)
    # three runs are half-written; none of them passes for imported
    half = [r for r in runs_of(setup) if r.data.tags.get("pcs.importing")]
    assert len(half) == 3
    assert not any(r.data.tags.get("pcs.imported_from") for r in runs_of(setup))
    killed.kill()
    killed.wait()
    for original in setup.originals:
        with pytest.raises(RunNotFoundError):
            Run.from_existing_run_id(original)
    assert leftovers(setup, killed.pid), "the killed import's unpacked bundle is still there"
    os.utime(leftovers(setup, killed.pid)[0], (time.time() - 60, time.time() - 60))

    started = time.perf_counter()
    mapping = transfer.import_bundle(setup.bundle)
    elapsed = time.perf_counter() - started

    assert elapsed < 30  # the dead importer's claims were taken over at once, not after heartbeats
    assert_one_complete_copy_each(setup, mapping)
    # the half-written runs are gone (a tracking server keeps them deleted, without the marks)
    for run in half:
        remaining = [r for r in runs_of(setup) if r.info.run_id == run.info.run_id]
        assert all(r.info.lifecycle_stage == "deleted" for r in remaining)
    assert active_claims(setup, [killed.pid, os.getpid()]) == []
    assert leftovers(setup, killed.pid) == []  # swept by the retry


# -- an interrupted importer ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_STORES[:2])
def test_sigterm_during_import_leaves_nothing_half_written(
    kind, request, tmp_path, template_store, monkeypatch, hook
):
    setup = setup_target(kind, request, tmp_path, template_store, monkeypatch, archive=True)
    process = hook.start("import", str(setup.bundle), PCS_TEST_PAUSE="create_run:3")
    hook.wait_for("paused", process)
    assert len([r for r in runs_of(setup) if r.data.tags.get("pcs.importing")]) == 3
    assert leftovers(setup, process.pid)

    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)

    assert process.returncode == -signal.SIGTERM, err
    assert [r for r in runs_of(setup) if r.info.lifecycle_stage == "active"] == []
    assert not [r for r in runs_of(setup) if set(r.data.tags) & {"pcs.importing", "pcs.imported_from"}]
    assert active_claims(setup, [process.pid]) == []
    assert leftovers(setup, process.pid) == []
    if kind == "sqlite":
        assert runs_of(setup) == []  # removed for good, not only marked deleted


# -- claims of importers elsewhere -----------------------------------------------------------------


def fake_holder(client, original: str, host: str, pid: int, interval: float,
                token: str = "tok") -> tuple[str, str]:
    """The record and claim an importer on ``host`` would have made for ``original``."""
    from pcs import _keys
    from pcs._liveness import now_ms

    record = client.create_experiment(
        f"{_claims.HOLDER_PREFIX}{host}/{pid}/{token}",
        tags={_keys.HOST: host, _keys.PID: str(pid), _claims.TOKEN: token,
              _keys.HEARTBEAT: str(now_ms()), _keys.HEARTBEAT_INTERVAL: str(interval)},
    )
    claim = client.create_experiment(
        _claims.claim_name(original, 0),
        tags={_claims.ORIGINAL: original, _claims.HOLDER_ID: record, _keys.HOST: host,
              _keys.PID: str(pid), _claims.TOKEN: token},
    )
    return record, claim


def test_a_claim_whose_importer_stops_beating_is_taken_over_after_three_intervals(
    request, tmp_path, template_store, monkeypatch
):
    setup = setup_target("sqlite", request, tmp_path, template_store, monkeypatch)
    monkeypatch.setenv("PCS_HEARTBEAT_S", "0.5")
    client = setup.client()
    record, claim = fake_holder(client, setup.originals[0], "elsewhere", 4242, 0.5)

    started = time.perf_counter()
    mapping = transfer.import_bundle(setup.bundle)
    elapsed = time.perf_counter() - started

    assert elapsed >= 1.0  # it waited for the heartbeat to go stale (3 x 0.5 s)
    assert elapsed < 30
    assert_one_complete_copy_each(setup, mapping)
    assert client.get_experiment(claim).lifecycle_stage == "deleted"
    assert client.get_experiment(record).lifecycle_stage == "deleted"
    assert active_claims(setup) == []


def test_a_live_importer_elsewhere_is_waited_for(request, tmp_path, template_store, monkeypatch):
    from pcs import _keys
    from pcs._liveness import now_ms

    setup = setup_target("sqlite", request, tmp_path, template_store, monkeypatch)
    monkeypatch.setenv("PCS_HEARTBEAT_S", "0.3")
    client = setup.client()
    record, claim = fake_holder(client, setup.originals[0], "elsewhere", 4242, 0.3)
    released = threading.Event()

    def importer_elsewhere() -> None:
        # beats for 2 s (well past 3 intervals), then gives up without writing anything
        until = time.time() + 2.0
        while time.time() < until:
            client.set_experiment_tag(record, _keys.HEARTBEAT, str(now_ms()))
            time.sleep(0.1)
        client.delete_experiment(claim)
        client.delete_experiment(record)
        released.set()

    thread = threading.Thread(target=importer_elsewhere)
    started = time.perf_counter()
    thread.start()
    try:
        mapping = transfer.import_bundle(setup.bundle)
    finally:
        thread.join()
    assert time.perf_counter() - started >= 2.0  # it waited, although 3 intervals passed
    assert released.is_set()
    assert_one_complete_copy_each(setup, mapping)
    assert active_claims(setup) == []


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(
    request, tmp_path, template_store, monkeypatch
):
    setup = setup_target("sqlite", request, tmp_path, template_store, monkeypatch)
    client = setup.client()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    fake_holder(client, setup.originals[0], this_host(), gone.pid, 60)
    # an earlier process that had this very pid (a restarted container) left another claim
    fake_holder(client, setup.originals[1], this_host(), os.getpid(), 60, token="earlier")

    started = time.perf_counter()
    mapping = transfer.import_bundle(setup.bundle)
    elapsed = time.perf_counter() - started

    assert elapsed < 30  # no wait for heartbeats (60 s intervals)
    assert_one_complete_copy_each(setup, mapping)
    assert active_claims(setup) == []


def test_an_importer_whose_claims_were_taken_over_gives_up(
    request, tmp_path, template_store, monkeypatch, hook
):
    setup = setup_target("sqlite", request, tmp_path, template_store, monkeypatch)
    process = hook.start("import", str(setup.bundle), PCS_TEST_PAUSE="create_run:2")
    hook.wait_for("paused", process)
    # another importer judged it dead (say, it was suspended) and took over: its record is gone
    client = setup.client()
    (record,) = [
        e for e in client.search_experiments()
        if e.name.startswith(f"{_claims.HOLDER_PREFIX}{this_host()}/{process.pid}/")
    ]
    client.delete_experiment(record.experiment_id)
    hook.resume(process)
    out, err = process.communicate(timeout=120)

    assert process.returncode == TrackingStoreError.exit_code
    assert "took over" in err and "Traceback" not in err
    assert runs_of(setup) == []
    assert active_claims(setup, [process.pid]) == []


def test_a_run_left_half_written_by_an_older_pcs_is_replaced(
    request, tmp_path, template_store, monkeypatch
):
    setup = setup_target("sqlite", request, tmp_path, template_store, monkeypatch)
    client = setup.client()
    original = setup.originals[0]
    record = setup.records[original]
    # older versions tagged the run imported when they created it, then were killed
    left = client.create_run("0", start_time=record["start_time"], tags={"pcs.imported_from": original})
    # the empty run passes for the imported one, as it did for older versions
    assert Run.from_existing_run_id(original).identifier == left.info.run_id

    mapping = transfer.import_bundle(setup.bundle)

    assert mapping[original] != left.info.run_id
    assert_one_complete_copy_each(setup, mapping)
    assert Run.from_existing_run_id(original).identifier == mapping[original]
