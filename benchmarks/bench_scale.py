#!/usr/bin/env python
"""Does a run's cost depend on the process or on the code's size? (issue 22, point 2)

Usage::

    python benchmarks/bench_scale.py [--runs 40] [--modules 18000] [--helpers 1 20 100]
                                     [--start-server] [--skip modules|helpers] [--json-out PATH]

Two measurements, each against a fluent MLflow run in the same process, the
cases taking turns:

1. **Modules loaded.** The same trivial component run (``Component.from_repo``)
   in this process as it is (MLflow and pcs loaded: about 2k modules) and with
   ``--modules`` more synthetic modules imported (files written in the temporary
   folder, outside the component's repo, so they are neither installed nor the
   component's: the kind pcs must look at). The process switches between the
   two states by taking the extra entries out of ``sys.modules`` and putting
   them back, in blocks; the first run after a switch is not timed (it is the
   one that sees the change), so the table shows a run's steady cost in a
   process that has that many modules loaded.
2. **Helper modules.** A component whose file imports 1, 20 or 100 helper
   modules next to it (each a small function), run with ``from_repo``. A run
   executes its code in a fresh module namespace, so each run imports its
   helpers again; the report gives, as the floor, what plain Python takes to
   import as many helper modules afresh (timed in turn with the runs).

Targets (issue 22): 20k modules ≤ 1.2x 2k; 100 helpers ≤ 1.2x 1 helper.
This is a measurement tool, not a test; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import (  # noqa: E402  (switches MLflow's telemetry off before MLflow is imported)
    MlflowServer,
    cpu_count,
    load_average,
    progress,
    stamp,
    summarize,
    table,
    time_interleaved,
    workspace,
)

IMPORT_ONLY = "plain imports"
FLUENT_PARAMS = {"seed": 1, "Comp.__init__.x": 1, "Comp.fn.y": 2}
ARGS = {"Comp": {"__init__": {"x": 1}, "fn": {"y": 2}}}

COMPONENT = '''\
{imports}


class Comp:
    def __init__(self, x=1):
        self.x = x

    def fn(self, y=2):
        return self.x + y + {calls}
'''

HELPER = '''\
"""Helper {i}: a small function the component calls."""


def value_{i}():
    return 0
'''


def write_component(folder: Path, helpers: int) -> None:
    """A component file importing ``helpers`` helper modules, and the helpers, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(helpers):
        (folder / f"helper_{i}.py").write_text(HELPER.format(i=i), encoding="utf-8")
    imports = "\n".join(f"from helper_{i} import value_{i}" for i in range(helpers))
    calls = " + ".join(f"value_{i}()" for i in range(helpers)) or "0"
    (folder / "comp.py").write_text(COMPONENT.format(imports=imports, calls=calls), encoding="utf-8")


def pcs_case(folder: Path, experiment_id: str) -> Callable[[], object]:
    from pcs import Component, LocalRepo

    repo = LocalRepo(f"scale_{folder.name}", folder)

    def run() -> object:
        component = Component.from_repo(repo, "Comp", "comp.py", class_name="Comp", instantiate=True)
        return component.run_with_arg_set("fn", ARGS, seed=1, experiment_id=experiment_id)

    return run


def fluent_case(experiment_id: str) -> Callable[[], object]:
    import mlflow

    def run() -> None:
        mlflow.start_run(experiment_id=experiment_id)
        mlflow.log_params(FLUENT_PARAMS)
        mlflow.end_run()

    return run


def check(run: Any) -> None:
    value = run.return_value if hasattr(run, "return_value") else None
    if value != 3 or run.status != "FINISHED":
        raise SystemExit(f"the pcs case did not make a finished run returning 3 ({value!r}, {run.status})")


# -- 1. modules loaded ---------------------------------------------------------------------------


def synthetic_modules(workdir: Path, count: int) -> dict[str, Any]:
    """Import ``count`` small modules written under ``workdir/synth``; their sys.modules entries."""
    import importlib

    root = workdir / "synth"
    per_package = 200
    names: list[str] = []
    for p in range((count + per_package - 1) // per_package):
        package = root / f"synthpkg_{p}"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("", encoding="utf-8")
        names.append(f"synthpkg_{p}")
        for m in range(min(per_package, count - p * per_package) - 1):
            (package / f"mod_{m}.py").write_text(f"X = {m}\n", encoding="utf-8")
            names.append(f"synthpkg_{p}.mod_{m}")
    sys.path.append(str(root))
    importlib.invalidate_caches()
    for name in names:
        importlib.import_module(name)
    return {name: sys.modules[name] for name in names}


def bench_modules(args: argparse.Namespace, workdir: Path, experiment_id: str) -> dict[str, Any]:
    folder = workdir / "modules_component"
    write_component(folder, 1)
    pcs_run, fluent_run = pcs_case(folder, experiment_id), fluent_case(experiment_id)
    check(pcs_run())
    base = len(sys.modules)
    progress(f"importing {args.modules} synthetic modules")
    extra = synthetic_modules(workdir, args.modules)
    states = {
        f"{base // 100 / 10:g}k modules": lambda: [sys.modules.pop(n, None) for n in extra],
        f"{(base + len(extra)) // 100 / 10:g}k modules": lambda: sys.modules.update(extra),
    }
    sizes: dict[str, int] = {}
    samples: dict[str, dict[str, list[float]]] = {s: {"fluent": [], "pcs": []} for s in states}
    per_block = max(1, args.runs // args.blocks)
    for block in range(args.blocks):
        order = list(states) if block % 2 == 0 else list(reversed(states))
        for state in order:
            states[state]()
            sizes[state] = len(sys.modules)
            pcs_run()  # the run that sees the change: not timed
            got = time_interleaved({"fluent": fluent_run, "pcs": pcs_run}, per_block, 0)
            for case, values in got.items():
                samples[state][case].extend(values)
    sys.modules.update(extra)
    out: dict[str, Any] = {"sys_modules": sizes, "timing": {}}
    for state, cases in samples.items():
        timing = {case: summarize(values) for case, values in cases.items()}
        timing["pcs_over_fluent"] = round(timing["pcs"]["median_ms"] / timing["fluent"]["median_ms"], 2)
        out["timing"][state] = timing
    small, large = list(states)
    out["large_over_small_pcs"] = round(
        out["timing"][large]["pcs"]["median_ms"] / out["timing"][small]["pcs"]["median_ms"], 2
    )
    out["large_over_small_ratio"] = round(
        out["timing"][large]["pcs_over_fluent"] / out["timing"][small]["pcs_over_fluent"], 2
    )
    return out


# -- 2. helper modules -----------------------------------------------------------------------------


def import_case(workdir: Path, count: int) -> Callable[[], object]:
    """Plain Python importing ``count`` helper modules afresh (no pcs, no run): the floor.

    pcs runs each run's code in a fresh module namespace, so every run imports its
    helpers again; this is what those imports cost without pcs.
    """
    import importlib

    folder = workdir / "plain_imports"
    folder.mkdir()
    names = [f"plain_helper_{i}" for i in range(count)]
    for i, name in enumerate(names):
        (folder / f"{name}.py").write_text(HELPER.format(i=i), encoding="utf-8")
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()

    def run() -> None:
        for name in names:
            importlib.import_module(name)
        for name in names:
            del sys.modules[name]

    return run


def bench_helpers(args: argparse.Namespace, workdir: Path, experiment_id: str) -> dict[str, Any]:
    cases: dict[str, Callable[[], object]] = {"fluent": fluent_case(experiment_id)}
    for count in args.helpers:
        folder = workdir / f"helpers_{count}"
        write_component(folder, count)
        cases[f"{count} helpers"] = pcs_case(folder, experiment_id)
        check(cases[f"{count} helpers"]())
    most = max(args.helpers)
    cases[IMPORT_ONLY] = import_case(workdir, most)
    samples = time_interleaved(cases, args.runs, args.warmup)
    timing: dict[str, Any] = {name: summarize(values) for name, values in samples.items()}
    floor = timing.pop(IMPORT_ONLY)
    floor["helpers"] = most
    fluent = timing["fluent"]["median_ms"]
    first = f"{args.helpers[0]} helpers"
    for name in timing:
        if name != "fluent":
            timing[name]["over_fluent"] = round(timing[name]["median_ms"] / fluent, 2)
            timing[name][f"over_{args.helpers[0]}"] = round(
                timing[name]["median_ms"] / timing[first]["median_ms"], 2
            )
    return {"timing": timing, "plain_imports": floor}


# -- report ----------------------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    meta = results["meta"]
    print(f"\npcs {meta['pcs']} (from {meta['pcs_path']}), MLflow {meta['mlflow']}, "
          f"Python {meta['python']}, {meta['cpus']} CPUs, {meta['tracking_uri']}")
    print(f"load average: {meta['load_average_at_start']} at start, {meta['load_average_at_end']} at end")
    modules = results.get("modules")
    if modules:
        print("\n1. A trivial component run by modules loaded in the process (median ms)")
        rows = []
        for state, timing in modules["timing"].items():
            rows.append([state, str(modules["sys_modules"][state]), f"{timing['fluent']['median_ms']:.1f}",
                         f"{timing['pcs']['median_ms']:.1f}", f"{timing['pcs_over_fluent']:.2f}"])
        table(["state", "sys.modules", "fluent", "pcs", "pcs / fluent"], rows)
        print(f"   pcs, many modules / few: {modules['large_over_small_pcs']:.2f}x "
              f"(ratios to fluent: {modules['large_over_small_ratio']:.2f}x); target <= 1.2")
    helpers = results.get("helpers")
    if helpers:
        timing = helpers["timing"]
        print("\n2. A component run by helper modules in its closure (median ms)")
        first = next(k for k in timing if k != "fluent")
        rows = [["fluent", f"{timing['fluent']['median_ms']:.1f}", "1.00", "-"]]
        key = "over_" + first.split()[0]
        for name, t in timing.items():
            if name != "fluent":
                rows.append([name, f"{t['median_ms']:.1f}", f"{t['over_fluent']:.2f}", f"{t[key]:.2f}"])
        table(["case", "median", "x fluent", f"x {first}"], rows)
        print("   target: the most helpers <= 1.2x the fewest")
        floor = helpers.get("plain_imports")
        if floor:
            last = next(k for k in reversed(list(timing)) if k != "fluent")
            extra = timing[last]["median_ms"] - timing[first]["median_ms"]
            print(f"   {last} - {first}: {extra:.1f} ms; plain Python importing {floor['helpers']} helper "
                  f"modules afresh (no pcs): {floor['median_ms']:.1f} ms")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="timed runs per case (default 40)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modules", type=int, default=18000, help="synthetic modules to add (default 18000)")
    parser.add_argument("--blocks", type=int, default=4, help="switches between module states (default 4)")
    parser.add_argument("--helpers", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--start-server", action="store_true", help="measure against an mlflow server")
    parser.add_argument("--skip", nargs="*", default=[], choices=["modules", "helpers"])
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with workspace("pcs-bench-scale-", keep=args.keep) as workdir:
        server = MlflowServer(workdir / "server") if args.start_server else None
        try:
            if server is not None:
                progress("starting mlflow server")
                uri = server.start()
                label = f"mlflow server {uri}"
            else:
                uri = f"sqlite:///{workdir / 'mlflow.db'}"
                label = "fresh sqlite:///<tmp>/mlflow.db"
            os.environ["MLFLOW_TRACKING_URI"] = uri
            results = run_all(args, workdir, uri, label)
        finally:
            if server is not None:
                server.stop()
    print_report(results)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def run_all(args: argparse.Namespace, workdir: Path, uri: str, label: str) -> dict[str, Any]:
    import mlflow

    import pcs

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    client.search_experiments(max_results=1)  # creates / migrates the store, untimed
    results: dict[str, Any] = {"meta": {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpus": cpu_count(),
        "load_average_at_start": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mlflow": mlflow.__version__,
        "pcs": getattr(pcs, "__version__", "unknown"),
        "pcs_path": str(Path(pcs.__file__).parent.parent),
        "tracking_uri": label,
        "argv": sys.argv[1:],
    }}
    started = time.perf_counter()
    # helpers first: the synthetic modules of part 1 stay loaded afterwards
    if "helpers" not in args.skip:
        progress("helper modules")
        results["helpers"] = bench_helpers(args, workdir, client.create_experiment(f"scale-helpers-{stamp()}"))
    if "modules" not in args.skip:
        progress("modules loaded")
        results["modules"] = bench_modules(args, workdir, client.create_experiment(f"scale-modules-{stamp()}"))
    results["meta"]["load_average_at_end"] = load_average()
    results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    return results


if __name__ == "__main__":
    sys.exit(main())
