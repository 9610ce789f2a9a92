"""What the benchmark scripts share: statistics, interleaved timing, counting MLflow calls,
a throwaway ``mlflow server``, a temporary workspace and report tables.

Importing this module switches MLflow's usage telemetry off (before MLflow is
imported), so no benchmark phones home and both sides pay the same (zero)
telemetry cost. It is a measurement helper, not part of pcs: to count calls it
patches MLflow classes at run time and restores them afterwards.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Before MLflow is imported anywhere: a benchmark must not phone home.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
# Against an MLflow server, set_terminated would print two links per run (and
# fetch the run to build them); the report should stay readable. Both sides.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

__all__ = [
    "summarize",
    "percentile",
    "spread",
    "time_interleaved",
    "CallCounter",
    "mlflow_layers",
    "count_one",
    "free_port",
    "MlflowServer",
    "workspace",
    "pcs_command",
    "table",
    "yes",
    "ms",
    "stamp",
    "progress",
    "cpu_count",
    "load_average",
]


# -- statistics ---------------------------------------------------------------------------------


def summarize(seconds: list[float]) -> dict[str, float]:
    """Median, p90 (nearest rank), min, max and mean of samples, in milliseconds."""
    values = sorted(s * 1000 for s in seconds)
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "min_ms": round(values[0], 3),
        "max_ms": round(values[-1], 3),
        "mean_ms": round(statistics.fmean(values), 3),
    }


def percentile(sorted_values: list[float], pct: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    rank = max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)
    return sorted_values[rank]


def spread(values: list[float]) -> str:
    """``min-max`` of a few numbers (e.g. one ratio from several invocations), for a report."""
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}"


def time_interleaved(
    cases: Mapping[str, Callable[[], object]], runs: int, warmup: int
) -> dict[str, list[float]]:
    """Wall time of each case, ``runs`` times, the cases taking turns.

    Taking turns (and rotating who goes first) spreads drift, such as the store
    growing or another job starting on the machine, evenly over the cases
    instead of charging it to the last one.
    """
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(runs):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            cases[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


# -- counting MLflow calls -----------------------------------------------------------------------


class CallCounter:
    """Counts calls into MLflow classes (by layer and method), SQL statements and HTTP requests.

    While active, every plain method defined by a layer's class (or an MLflow
    base class of it) is wrapped. ``calls`` counts every call, ``entries`` only
    calls made from outside that layer (what the layer above asked for), and
    ``mlflow_seconds`` adds up wall time spent inside any wrapped call, counted
    once at the outermost one. With ``http=True`` every request made through
    ``requests`` (which MLflow's REST store and artifact repositories use) is
    counted by method and path. Only the thread that made the counter counts,
    so a background thread (pcs's heartbeat) is left out.
    """

    def __init__(self, layers: Mapping[str, type], engine: Any = None, http: bool = False) -> None:
        self.layers = dict(layers)
        self.engine = engine
        self.count_http = http
        self.calls: dict[str, Counter] = {name: Counter() for name in layers}
        self.entries: dict[str, Counter] = {name: Counter() for name in layers}
        self.entry_seconds: dict[str, defaultdict[str, float]] = {
            name: defaultdict(float) for name in layers
        }
        self.sql: Counter = Counter()
        self.http: Counter = Counter()
        self.http_seconds = 0.0
        self.mlflow_seconds = 0.0
        self._depth: Counter = Counter()
        self._outer_depth = 0
        self._thread = threading.get_ident()
        self._patched: list[tuple[type, str, Any]] = []

    def __enter__(self) -> CallCounter:
        for layer, cls in self.layers.items():
            seen: set[str] = set()
            for klass in cls.__mro__:
                if not klass.__module__.startswith("mlflow"):
                    continue
                for name, attr in list(vars(klass).items()):
                    if name in seen or not isinstance(attr, types.FunctionType):
                        continue
                    if name.startswith("__") and name != "__init__":
                        continue
                    seen.add(name)
                    self._patched.append((klass, name, attr))
                    setattr(klass, name, self._wrap(layer, name, attr))
        if self.count_http:
            import requests

            original = requests.Session.request
            self._patched.append((requests.Session, "request", original))
            requests.Session.request = self._wrap_http(original)  # type: ignore[method-assign]
        if self.engine is not None:
            from sqlalchemy import event

            event.listen(self.engine, "before_cursor_execute", self._on_sql)
            event.listen(self.engine, "commit", self._on_commit)
        return self

    def __exit__(self, *exc: object) -> None:
        for klass, name, attr in reversed(self._patched):
            setattr(klass, name, attr)
        self._patched.clear()
        if self.engine is not None:
            from sqlalchemy import event

            event.remove(self.engine, "before_cursor_execute", self._on_sql)
            event.remove(self.engine, "commit", self._on_commit)

    def _wrap(self, layer: str, name: str, fn: Callable) -> Callable:
        counter = self

        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != counter._thread:
                return fn(*args, **kwargs)
            counter.calls[layer][name] += 1
            entry = counter._depth[layer] == 0
            if entry:
                counter.entries[layer][name] += 1
            counter._depth[layer] += 1
            outermost = counter._outer_depth == 0
            counter._outer_depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                counter._outer_depth -= 1
                counter._depth[layer] -= 1
                if entry:
                    counter.entry_seconds[layer][name] += elapsed
                if outermost:
                    counter.mlflow_seconds += elapsed

        return counted

    def _wrap_http(self, fn: Callable) -> Callable:
        counter = self

        @functools.wraps(fn)
        def counted(session: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != counter._thread:
                return fn(session, method, url, *args, **kwargs)
            counter.http[f"{method.upper()} {_endpoint(url)}"] += 1
            start = time.perf_counter()
            try:
                return fn(session, method, url, *args, **kwargs)
            finally:
                counter.http_seconds += time.perf_counter() - start

        return counted

    def _on_sql(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if threading.get_ident() == self._thread:
            self.sql[statement.lstrip().split(None, 1)[0].upper()] += 1

    def _on_commit(self, conn) -> None:
        if threading.get_ident() == self._thread:
            self.sql["COMMIT"] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counts so far, as plain sorted dicts."""
        return {
            "calls": {layer: dict(sorted(c.items())) for layer, c in self.calls.items()},
            "entries": {layer: dict(sorted(c.items())) for layer, c in self.entries.items()},
            "sql": dict(sorted(self.sql.items())),
            "http": dict(sorted(self.http.items())),
        }

    def seconds(self) -> dict[str, dict[str, float]]:
        """Wall time of the calls each layer got from the layer above, by method."""
        return {layer: dict(c) for layer, c in self.entry_seconds.items()}


def _endpoint(url: str) -> str:
    """A request's path with what varies per run (artifact paths) folded away."""
    path = urlsplit(url).path
    marker = "/mlflow-artifacts/artifacts/"
    if marker in path:
        return path.split(marker, 1)[0] + marker + "<path>"
    return path


def mlflow_layers(sample_run_id: str) -> tuple[dict[str, type], Any, bool]:
    """The MLflow classes a run goes through, top to bottom; the store's SQL engine; HTTP or not."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    client = MlflowClient()
    store = client._tracking_client.store
    artifact_repo = type(get_artifact_repository(client.get_run(sample_run_id).info.artifact_uri))
    layers = {
        "MlflowClient": MlflowClient,
        "TrackingServiceClient": TrackingServiceClient,
        f"store ({type(store).__name__})": type(store),
        f"artifacts ({artifact_repo.__name__})": artifact_repo,
    }
    uri = client._tracking_client.tracking_uri
    return layers, getattr(store, "engine", None), uri.startswith(("http://", "https://"))


def count_one(
    fn: Callable[[], object], layers: Mapping[str, type], engine: Any, http: bool = False
) -> dict[str, Any]:
    """What one call of ``fn`` asks of MLflow, its wall time and the part spent in MLflow."""
    with CallCounter(layers, engine, http=http) as counter:
        start = time.perf_counter()
        fn()
        total = time.perf_counter() - start
    return {
        "snapshot": counter.snapshot(),
        "total": total,
        "inside": counter.mlflow_seconds,
        "http_seconds": counter.http_seconds,
        "by_method": counter.seconds()["MlflowClient"],
        "by_layer": counter.seconds(),
    }


# -- a throwaway mlflow server -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite backend and proxied artifacts, one worker.

    Args:
        folder: where its database, artifacts and log go.
        backend_db: an existing SQLite file to serve (default: a new ``server.db``).
    """

    def __init__(self, folder: Path, backend_db: Path | None = None) -> None:
        self.folder = folder
        self.backend_db = backend_db or folder / "server.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "server.log"
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> str:
        """Start the server and wait until ``/health`` answers; its URL."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # its job runner is eight more processes
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.backend_db}",
            "--artifacts-destination", str(self.folder / "server-artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            # its own session, so stopping it also stops the uvicorn process it starts
            self._process = subprocess.Popen(
                command, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mlflow server exited with {self._process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return self.url
            except urllib.error.HTTPError:
                return self.url
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server at {self.url} did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the server and the processes it started (its own process group)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def workspace(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temporary folder that is the working directory and ``PCS_HOME`` meanwhile.

    MLflow puts a SQLite store's artifacts under the working directory, so they
    land here too. The previous directory and environment come back at the end,
    and the folder is removed unless ``keep``.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    previous_cwd = os.getcwd()
    previous_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "PCS_HOME")}
    try:
        os.chdir(folder)
        os.environ["PCS_HOME"] = str(folder / "pcs_home")
        yield folder
    finally:
        os.chdir(previous_cwd)
        for key, value in previous_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if keep:
            print(f"\nkept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def pcs_command() -> list[str]:
    """The ``pcs`` console script of this interpreter (not a shell shim in front of it)."""
    beside = Path(sys.executable).parent / "pcs"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("pcs")
    return [found] if found else [sys.executable, "-m", "pcs"]


# -- report --------------------------------------------------------------------------------------


STARTUP_HEAVY = ("mlflow", "sqlalchemy", "git", "dill", "yaml", "click")


def time_startup(workdir: Path, repeats: int) -> dict[str, Any]:
    """Wall time of fresh processes: bare Python, ``import pcs``, ``pcs --help``, ``import mlflow``.

    Also which heavy modules ``import pcs`` loads (``heavy_modules_after_import_pcs``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    py = sys.executable
    commands = {
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import pcs'": [py, "-c", "import pcs"],
        "pcs --help": pcs_command() + ["--help"],
        "python -c 'import mlflow'": [py, "-c", "import mlflow"],
    }

    def runner(command: list[str]) -> Callable[[], None]:
        def run() -> None:
            subprocess.run(command, cwd=workdir, env=env, check=True, capture_output=True)

        return run

    samples = time_interleaved({name: runner(cmd) for name, cmd in commands.items()}, repeats, warmup=1)
    probe = subprocess.run(
        [py, "-c", f"import json, sys, pcs; print(json.dumps([m for m in {STARTUP_HEAVY!r} if m in sys.modules]))"],
        cwd=workdir, env=env, check=True, capture_output=True, text=True,
    )
    return {
        "repeats": repeats,
        "commands": {name: " ".join(cmd) for name, cmd in commands.items()},
        "timing": {name: summarize(s) for name, s in samples.items()},
        "heavy_modules_after_import_pcs": json.loads(probe.stdout),
    }


def table(header: list[str], rows: list[list[str]], indent: str = "   ") -> None:
    """Print rows under a header, the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return indent + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    print(indent + "  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def progress(text: str) -> None:
    print(f"[bench] {text} ...", file=sys.stderr, flush=True)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_meta(**extra: Any) -> dict[str, Any]:
    """What a result file says about when and where it was measured, plus ``extra``."""
    import datetime
    import platform

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpus": cpu_count(),
        "load_average_at_start": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "argv": sys.argv[1:],
        **extra,
    }
