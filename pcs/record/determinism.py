"""Seeding what a run uses, and the facts that decide whether two runs compute alike.

Seeding: :func:`seeded` seeds ``random`` and the frameworks already imported
(NumPy, PyTorch, TensorFlow; JAX has no global generator) when a run starts,
and while it is active seeds a framework the moment its first import
finishes. It never imports a framework itself, so a pure-Python run does not
pay for loading PyTorch, and a framework the run loads halfway through starts
from the run's seed all the same.

Determinism record: :func:`determinism_record` lists what can make the same
code, arguments and seed compute different numbers (``PYTHONHASHSEED``, the
thread-count variables, the thread counts of imported frameworks, the CPU,
the GPU, its driver and CUDA), and :func:`determinism_suspects` turns two
such records into the lines a diverged verification shows.
"""

from __future__ import annotations

import contextvars
import importlib.abc
import importlib.machinery
import os
import platform
import random
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Any

__all__ = [
    "FRAMEWORKS",
    "THREAD_VARIABLES",
    "DETERMINISM_VARIABLES",
    "SeedReport",
    "seeded",
    "seed_everything",
    "determinism_record",
    "determinism_suspects",
]

# top-level modules with a global random generator pcs seeds (jax has none, but is noted)
FRAMEWORKS = ("numpy", "torch", "tensorflow", "jax")

# variables that set how many threads a numeric library uses
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
# other variables that change which kernels run, or whether they are deterministic
DETERMINISM_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "TF_ENABLE_ONEDNN_OPTS",
    "MKL_CBWR",
    "OPENBLAS_CORETYPE",
    "XLA_FLAGS",
)


# -- seeding ---------------------------------------------------------------------------------


@dataclass
class SeedReport:
    """What :func:`seeded` seeded: before the run, and when first imported during it."""

    seed: int
    seeded: list[str] = field(default_factory=list)  # in the order they were seeded
    on_import: list[str] = field(default_factory=list)  # the ones seeded at their first import
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the run's record."""
        return {
            "seed": self.seed,
            "seeded": list(self.seeded),
            "on_import": list(self.on_import),
            "notes": list(self.notes),
        }


def _seed_module(name: str, module: ModuleType, seed: int) -> str | None:
    """Seed one framework's global generator; return a note when it has none to seed."""
    if name == "numpy":
        module.random.seed(seed % 2**32)  # the legacy global RandomState takes 32 bits
    elif name == "torch":
        module.manual_seed(seed % 2**63)  # CPU and every CUDA device
    elif name == "tensorflow":
        module.random.set_seed(seed % 2**31)
    elif name == "jax":
        return (
            "jax has no global random generator: derive keys from the run's seed, "
            "e.g. jax.random.PRNGKey(active_component_run(self).seed)"
        )
    return None


def _seed_into(report: SeedReport, name: str, module: ModuleType, *, on_import: bool) -> None:
    note = _seed_module(name, module, report.seed)
    if note is not None:
        if note not in report.notes:
            report.notes.append(note)
        return
    if name not in report.seeded:
        report.seeded.append(name)
    if on_import and name not in report.on_import:
        report.on_import.append(name)


def _seed_now(report: SeedReport) -> None:
    """Seed ``random`` and the frameworks already imported with ``report.seed``."""
    random.seed(report.seed)
    report.seeded.append("random")
    for name in FRAMEWORKS:
        module = _loaded(name)
        if module is not None:
            _seed_into(report, name, module, on_import=False)


def _loaded(name: str) -> ModuleType | None:
    """``sys.modules[name]`` once it has finished importing (never imports it)."""
    module = sys.modules.get(name)
    if module is None:
        return None
    spec = getattr(module, "__spec__", None)
    if spec is not None and getattr(spec, "_initializing", False):
        return None  # another thread is still importing it; the hook sees it finish
    return module


def seed_everything(seed: int) -> list[str]:
    """Seed ``random`` and the frameworks already imported; never import one.

    Args:
        seed: a non-negative integer.

    Returns:
        What was seeded, in order (``["random", "numpy", ...]``).
    """
    report = SeedReport(seed)
    _seed_now(report)
    return report.seeded


class _Active:
    """One entered :func:`seeded` block."""

    def __init__(self, report: SeedReport) -> None:
        self.report = report


_LOCK = threading.RLock()
_STACK: list[_Active] = []  # every active block, in the order entered (any thread)
_CURRENT: contextvars.ContextVar[_Active | None] = contextvars.ContextVar(
    "pcs_seeded", default=None
)
_FINDING = threading.local()  # names whose spec this thread is looking up


def _active_for_this_context() -> _Active | None:
    """The block active where an import happens: this context's, else the newest."""
    mine = _CURRENT.get()
    with _LOCK:
        if mine is not None and mine in _STACK:
            return mine
        return _STACK[-1] if _STACK else None


class _SeedingLoader(importlib.abc.Loader):
    """Runs the real loader, puts it back on the module, then seeds the module."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            # the module keeps the loader it would have had without pcs
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.loader is self:
                spec.loader = self._loader
            if getattr(module, "__loader__", None) is self:
                module.__loader__ = self._loader
        active = _active_for_this_context()
        if active is not None:
            # a module may replace itself in sys.modules while it runs
            finished = sys.modules.get(self._name, module)
            _seed_into(active.report, self._name, finished, on_import=True)

    def __getattr__(self, name: str) -> Any:
        # importlib.resources, pkgutil and friends ask the loader while the module runs
        return getattr(self._loader, name)


class _SeedOnImport(importlib.abc.MetaPathFinder):
    """Finds a framework's spec with the other finders and wraps its loader."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in FRAMEWORKS:
            return None
        finding = getattr(_FINDING, "names", None)
        if finding is None:
            finding = _FINDING.names = set()
        if fullname in finding:
            return None  # a finder below asked again: let the others answer
        finding.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self:
                    continue
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        finally:
            finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # not installed, or a namespace package: nothing to seed
        spec.loader = _SeedingLoader(spec.loader, fullname)
        return spec


_FINDER = _SeedOnImport()


@contextmanager
def seeded(seed: int) -> Iterator[SeedReport]:
    """Seed ``random`` and the imported frameworks now, and the others when first imported.

    While the block is active, NumPy, PyTorch and TensorFlow are seeded with
    ``seed`` as soon as their first import finishes (an import hook that
    wraps only their loader, removed when the last block exits). Nothing is
    imported on pcs's behalf. Blocks nest (an inner run seeds with its own
    seed) and may be active in several threads at once; an import is seeded
    with the seed of the block active in the importing thread's context.

    Args:
        seed: a non-negative integer.

    When the block exits, ``random``'s state and the global states of the
    frameworks that were loaded when it started (NumPy's legacy generator,
    PyTorch's CPU generator) are put back as they were, so a run leaves the
    caller's random numbers where it found them (an inner run leaves its outer
    run's).

    Returns:
        A context manager yielding the :class:`SeedReport`, filled in as
        frameworks are seeded.

    Example::

        with seeded(7) as report:
            value = entry_point()
        report.seeded  # ['random', 'numpy']
    """
    report = SeedReport(seed)
    active = _Active(report)
    with _LOCK:
        _STACK.append(active)
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
    token = _CURRENT.set(active)
    kept = _generator_states()
    try:
        _seed_now(report)
        yield report
    finally:
        _restore_generator_states(kept)
        _CURRENT.reset(token)
        with _LOCK:
            _STACK.remove(active)
            if not _STACK:
                try:
                    sys.meta_path.remove(_FINDER)
                except ValueError:
                    pass  # someone replaced sys.meta_path meanwhile


def _generator_states() -> list[tuple[Callable[[Any], Any], Any]]:
    """How to put back the global random states of ``random`` and the loaded frameworks."""
    states: list[tuple[Callable[[Any], Any], Any]] = [(random.setstate, random.getstate())]
    numpy = _loaded("numpy")
    if numpy is not None:
        try:
            states.append((numpy.random.set_state, numpy.random.get_state()))
        except Exception:  # noqa: BLE001,S110 - a NumPy without a legacy global generator
            pass
    torch = _loaded("torch")
    if torch is not None:
        try:
            states.append((torch.random.set_rng_state, torch.random.get_rng_state()))
        except Exception:  # noqa: BLE001,S110 - a build without a CPU generator to read
            pass
    return states


def _restore_generator_states(states: list[tuple[Callable[[Any], Any], Any]]) -> None:
    for restore, state in states:
        try:
            restore(state)
        except Exception:  # noqa: BLE001,S110 - a framework that refuses its own state: leave it
            pass


# -- the determinism record ------------------------------------------------------------------


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    """The CPU's model name (read once per process)."""
    system = platform.system()
    if system == "Linux":
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
        # x86 names it "model name"; ARM and POWER use other keys
        for key in ("model name", "hardware", "cpu model", "cpu", "processor"):
            value = fields.get(key, "")
            if value and not value.isdigit():
                return value
    elif system == "Darwin":
        import subprocess

        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True, text=True, timeout=5, check=False,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu() -> dict[str, Any]:
    count = os.cpu_count()
    try:
        usable: int | None = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        usable = count
    return {"model": _cpu_model(), "count": count, "usable": usable}


def _text(value: Any) -> str:
    """NVML answers bytes in older bindings and str in newer ones."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _cuda_version(number: int) -> str:
    """NVML's CUDA driver version as text: 12040 -> '12.4'."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def _read_nvml(nvml: Any) -> dict[str, Any] | None:
    """GPU models, driver and CUDA version through NVML; None when no NVIDIA driver answers.

    Args:
        nvml: the ``pynvml`` module (from the ``nvidia-ml-py`` distribution).
    """
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return None  # no driver or no libnvidia-ml on this machine
    try:
        record: dict[str, Any] = {"driver": _text(nvml.nvmlSystemGetDriverVersion())}
        try:
            record["cuda"] = _cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion()))
        except nvml.NVMLError:
            record["cuda"] = None
        devices = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            devices.append(_text(nvml.nvmlDeviceGetName(handle)))
        record["devices"] = devices
        return record
    except nvml.NVMLError as exc:
        return {"error": f"NVML: {exc}"}
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


@lru_cache(maxsize=1)
def _gpu() -> dict[str, Any] | None:
    """The GPU record, read once per process; None without ``pcs[gpu]`` or an NVIDIA driver."""
    try:
        import pynvml  # the optional extra pcs[gpu] (nvidia-ml-py)
    except ImportError:
        return None
    return _read_nvml(pynvml)


def _call(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except Exception:  # noqa: BLE001 - a framework too old or too new for one probe
        return None


def _framework_record(name: str, module: ModuleType) -> dict[str, Any]:
    """Version, thread counts and determinism switches of an imported framework."""
    out: dict[str, Any] = {"version": str(getattr(module, "__version__", None))}
    if name == "numpy":
        config = _call(lambda: module.__config__.CONFIG["Build Dependencies"]["blas"])
        if isinstance(config, dict) and config.get("name"):
            out["blas"] = f"{config['name']} {config.get('version', '')}".strip()
    elif name == "torch":
        out["threads"] = _call(lambda: module.get_num_threads())
        out["interop_threads"] = _call(lambda: module.get_num_interop_threads())
        out["deterministic_algorithms"] = _call(lambda: module.are_deterministic_algorithms_enabled())
        out["cudnn_benchmark"] = _call(lambda: bool(module.backends.cudnn.benchmark))
        out["cuda"] = _call(lambda: module.version.cuda)
    elif name == "tensorflow":
        out["threads"] = _call(lambda: module.config.threading.get_intra_op_parallelism_threads())
        out["interop_threads"] = _call(lambda: module.config.threading.get_inter_op_parallelism_threads())
        out["deterministic_ops"] = _call(lambda: module.config.experimental.is_op_determinism_enabled())
    elif name == "jax":
        out["x64"] = _call(lambda: bool(module.config.jax_enable_x64))
    return {k: v for k, v in out.items() if v is not None}


def _blas_pools() -> list[dict[str, Any]] | None:
    """BLAS/OpenMP thread pools, when threadpoolctl is already imported (never imports it)."""
    module = _loaded("threadpoolctl")
    if module is None:
        return None
    info = _call(lambda: module.threadpool_info())
    if not isinstance(info, list):
        return None
    return [
        {
            "api": str(pool.get("internal_api") or pool.get("user_api")),
            "version": pool.get("version"),
            "threads": pool.get("num_threads"),
        }
        for pool in info
    ]


def determinism_record() -> dict[str, Any]:
    """What besides code, arguments and seed decides a run's numbers, read cheaply now.

    Hardware is read once per process; framework details only of frameworks
    already imported (nothing is imported to find out). The GPU appears only
    when NVML answers (install ``pcs[gpu]`` for it).

    Returns:
        ``{"pythonhashseed", "variables", "frameworks", "cpu"[, "gpu"]}``:
        ``variables`` holds the thread-count and determinism variables that
        are set.
    """
    variables = {
        name: os.environ[name]
        for name in (*THREAD_VARIABLES, *DETERMINISM_VARIABLES)
        if name in os.environ
    }
    frameworks: dict[str, Any] = {}
    for name in FRAMEWORKS:
        module = _loaded(name)
        if module is not None:
            frameworks[name] = _framework_record(name, module)
    pools = _blas_pools()
    if pools is not None:
        frameworks["blas_pools"] = pools
    record: dict[str, Any] = {
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
        "variables": variables,
        "frameworks": frameworks,
        "cpu": _cpu(),
    }
    gpu = _gpu()
    if gpu is not None:
        record["gpu"] = gpu
    return record


# -- suspects --------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _hashseed(value: Any) -> str:
    return "unset (random per process)" if value is None else str(value)


_FRAMEWORK_LABEL = {"numpy": "NumPy", "torch": "PyTorch", "tensorflow": "TensorFlow", "jax": "JAX"}


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if "pythonhashseed" in a and "pythonhashseed" in b:
        if a["pythonhashseed"] != b["pythonhashseed"]:
            lines.append(
                f"PYTHONHASHSEED: {_hashseed(a['pythonhashseed'])} vs {_hashseed(b['pythonhashseed'])}"
            )
    if "variables" in a and "variables" in b:
        va, vb = a["variables"] or {}, b["variables"] or {}
        known = (*THREAD_VARIABLES, *DETERMINISM_VARIABLES)
        names = [n for n in known if n in va or n in vb]
        names += sorted((set(va) | set(vb)) - set(known))
        for name in names:
            if va.get(name) != vb.get(name):
                lines.append(f"{name}: {_shown(va.get(name))} vs {_shown(vb.get(name))}")
    if "frameworks" in a and "frameworks" in b:
        fa, fb = a["frameworks"] or {}, b["frameworks"] or {}
        for name in [*FRAMEWORKS, *sorted((set(fa) | set(fb)) - set(FRAMEWORKS))]:
            if name not in fa and name not in fb:
                continue
            label = _FRAMEWORK_LABEL.get(name, name)
            if name == "blas_pools" and name in fa and name in fb:
                lines.extend(_pool_differences(fa[name], fb[name]))
                continue
            if name not in fa or name not in fb:
                lines.append(
                    f"{label}: {'imported' if name in fa else 'not imported'} vs "
                    f"{'imported' if name in fb else 'not imported'}"
                )
                continue
            ra, rb = fa[name], fb[name]
            if isinstance(ra, dict) and isinstance(rb, dict):
                for key in [k for k in ra if k in rb] + [k for k in rb if k not in ra]:
                    if key != "version" and ra.get(key) != rb.get(key):
                        # versions are the distributions' business; they are compared there
                        lines.append(f"{label} {key.replace('_', ' ')}: {_shown(ra.get(key))} vs {_shown(rb.get(key))}")
            elif ra != rb:
                lines.append(f"{label}: {_shown(ra)} vs {_shown(rb)}")
    if "cpu" in a and "cpu" in b:
        ca, cb = a["cpu"] or {}, b["cpu"] or {}
        if ca.get("model") != cb.get("model"):
            lines.append(f"CPU: {_shown(ca.get('model'))} vs {_shown(cb.get('model'))}")
        if ca.get("count") != cb.get("count"):
            lines.append(f"CPU count: {_shown(ca.get('count'))} vs {_shown(cb.get('count'))}")
        if ca.get("usable") != cb.get("usable") and ca.get("usable") is not None:
            lines.append(f"usable CPUs: {_shown(ca.get('usable'))} vs {_shown(cb.get('usable'))}")
    if "cpu" in a and "cpu" in b:  # both records are new enough to say "no GPU"
        ga, gb = a.get("gpu") or {}, b.get("gpu") or {}
        if ga.get("devices") != gb.get("devices"):
            lines.append(
                f"GPU: {_shown(ga.get('devices')) if ga else 'none'} vs "
                f"{_shown(gb.get('devices')) if gb else 'none'}"
            )
        if ga and gb:
            if ga.get("driver") != gb.get("driver"):
                lines.append(f"GPU driver: {_shown(ga.get('driver'))} vs {_shown(gb.get('driver'))}")
            if ga.get("cuda") != gb.get("cuda"):
                lines.append(f"CUDA: {_shown(ga.get('cuda'))} vs {_shown(gb.get('cuda'))}")
    return lines


def _pool_key(pool: Any) -> tuple[str, str, str]:
    if not isinstance(pool, Mapping):
        return (str(pool), "", "")
    return (str(pool.get("api")), str(pool.get("version")), str(pool.get("threads")))


def _pools(value: Any) -> list[tuple[str, str, str]]:
    """BLAS/OpenMP pools as a sorted list: the order threadpoolctl lists them in is the order
    the libraries were loaded, which says nothing about how they compute."""
    return sorted(_pool_key(p) for p in value) if isinstance(value, list) else []


def _pool_text(pool: tuple[str, str, str]) -> str:
    api, version, threads = pool
    return " ".join(x for x in (api, version if version != "None" else "", f"{threads} threads") if x)


def _pool_differences(a: Any, b: Any) -> list[str]:
    """The pools only one run had (as multisets: the same pools in another order are equal)."""
    pa, pb = _pools(a), _pools(b)
    only_a, only_b = list(pa), []
    for pool in pb:
        if pool in only_a:
            only_a.remove(pool)
        else:
            only_b.append(pool)
    if not only_a and not only_b:
        return []
    return [
        "BLAS/OpenMP thread pools: " + (", ".join(map(_pool_text, only_a)) or "none") + " vs "
        + (", ".join(map(_pool_text, only_b)) or "none")
    ]


def _risks(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The usual suspects that were the same in both runs but can still vary."""
    lines: list[str] = []
    if "pythonhashseed" in a and "pythonhashseed" in b:
        if a["pythonhashseed"] is None and b["pythonhashseed"] is None:
            lines.append(
                "PYTHONHASHSEED: unset in both runs, so str and bytes hashes, and with them "
                "the iteration order of sets, vary between processes; set PYTHONHASHSEED=0 "
                "to rule this out"
            )
    fa, fb = a.get("frameworks") or {}, b.get("frameworks") or {}
    threads_said = False  # a line about thread counts read from a library
    for name in FRAMEWORKS:
        ra, rb = fa.get(name), fb.get(name)
        if not (isinstance(ra, dict) and isinstance(rb, dict)):
            continue
        threads = ra.get("threads")
        if threads == rb.get("threads") and isinstance(threads, int) and threads != 1:
            label = _FRAMEWORK_LABEL[name]
            count = f"{threads} threads" if threads > 1 else "as many threads as cores"
            lines.append(
                f"{label}: {count} in both runs; a parallel reduction may add numbers in "
                "another order from run to run (one thread rules this out)"
            )
            threads_said = True
    pools_a, pools_b = fa.get("blas_pools") or [], fb.get("blas_pools") or []
    if pools_a and _pools(pools_a) == _pools(pools_b):
        many = sorted(
            (p for p in pools_a if isinstance(p, Mapping) and isinstance(p.get("threads"), int)
             and p["threads"] > 1),
            key=_pool_key,
        )
        if many:
            shown = ", ".join(f"{p['api']} {p['threads']} threads" for p in many)
            lines.append(
                f"BLAS/OpenMP thread pools: {shown} in both runs; results can depend on how "
                "work is split between threads (OMP_NUM_THREADS=1 rules this out)"
            )
            threads_said = True
    # numeric libraries whose thread count was not read (NumPy's BLAS without threadpoolctl)
    numeric = [
        n for n in ("numpy", "torch", "tensorflow") if (n in fa or n in fb)
        and "threads" not in (fa.get(n) or {}) and "threads" not in (fb.get(n) or {})
    ]
    va, vb = a.get("variables") or {}, b.get("variables") or {}
    if numeric and not threads_said and not pools_a and not pools_b and "variables" in a and "variables" in b:
        # no thread count was read from the libraries: the variables are all there is to go on
        unpinned = [n for n in THREAD_VARIABLES[:3] if va.get(n) != "1" or vb.get(n) != "1"]
        if unpinned:
            cores = (a.get("cpu") or {}).get("usable")
            count = f" ({cores} here)" if cores else ""
            lines.append(
                f"thread counts: {', '.join(unpinned)} not set to 1 in both runs, so "
                f"{', '.join(_FRAMEWORK_LABEL[n] for n in numeric)} may split work across as "
                f"many threads as cores{count} and add numbers in another order from run to run "
                "(OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 rules this out)"
            )
    ga, gb = a.get("gpu") or {}, b.get("gpu") or {}
    torch_a, torch_b = fa.get("torch"), fb.get("torch")
    if ga.get("devices") and gb.get("devices") and isinstance(torch_a, dict) and isinstance(torch_b, dict):
        if not (torch_a.get("deterministic_algorithms") and torch_b.get("deterministic_algorithms")):
            lines.append(
                "GPU: some CUDA kernels (atomic adds in cuDNN and cuBLAS) are not deterministic "
                "unless torch.use_deterministic_algorithms(True) is on and "
                "CUBLAS_WORKSPACE_CONFIG=:4096:8 is set"
            )
    return lines


def determinism_suspects(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Why two runs of the same code, arguments and seed may have computed different numbers.

    First what differed between the two records, in order (hash seed,
    variables, framework threads, CPU, GPU), then the usual suspects that were
    the same but can vary anyway. A part missing from a record (a run
    recorded by an older pcs) is left out, not reported as a difference.

    Args:
        a: the first run's :func:`determinism_record` (``{}`` when none was recorded).
        b: the second run's.

    Returns:
        One line per suspect, e.g. ``"OMP_NUM_THREADS: 4 vs 8"``.
    """
    return _differences(a or {}, b or {}) + _risks(a or {}, b or {})
