#!/usr/bin/env python
"""Peak memory and time of reading an alias bomb next to a normal input of the same size.

Usage::

    python benchmarks/bench_input.py [--repeats 3] [--json-out PATH] [--skip-unsafe]

For each way pcs reads YAML from a user — a registry file or bundle
(``InMemoryRegistry.from_yaml``), an argument-set file (``ArgumentSet.from_yaml``)
and a ``-a`` value (``pcs._yaml.parse_value``) — it loads two inputs of about
3 KB in fresh child processes and then walks the result as a command does
(``json.dumps`` of the registry, the argument set's content hash), which is
where an alias bomb that got through would expand:

- ``normal``: an ordinary input (a registry of 17 components; an AgentOS-style
  argument file with shared defaults merged in with ``<<: *defaults``; a list
  of 48 dicts);
- ``bomb``: a "billion laughs" document, 40 levels of anchors each listing the
  previous one 9 times.

Each child is reaped with ``os.wait4``, whose resource usage is that one
child's (``ru_maxrss``, the peak resident set size), unlike
``getrusage(RUSAGE_CHILDREN)``, which keeps the largest of every child so far.
The table shows the median load time inside the child (without interpreter
start-up) and the largest peak RSS over the repeats.

Unless ``--skip-unsafe`` is given, it also shows what ``yaml.safe_load``
followed by ``json.dumps`` (what pcs did before its safe loader) does with the
two registry inputs, the bomb once, in a child whose address space is capped
(``--unsafe-cap-mib``, default 1024) so it fails fast instead of taking the
machine's memory.

It needs only pcs importable (run it with ``PYTHONPATH`` at the checkout) and
takes about 10 seconds. Nothing is written outside a temporary folder, which is
removed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
kind, path, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
if cap:
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
text = open(path, encoding="utf-8").read()
import yaml
from pcs._yaml import parse_value
from pcs.argument_set import ArgumentSet
from pcs.registry import InMemoryRegistry
start = time.perf_counter()  # imports done: time the load and the walk only
try:
    if kind == "registry":
        json.dumps(InMemoryRegistry.from_yaml(path).to_dict())
    elif kind == "arg_set":
        ArgumentSet.from_yaml(path).identifier
    elif kind == "value":
        json.dumps(parse_value(text, "argument a.f.x"))
    else:  # "unsafe": what pcs did before its safe loader
        json.dumps(yaml.safe_load(text))
    outcome = "loaded"
except MemoryError:
    outcome = f"MemoryError at the {cap // 2**20} MiB cap"
except Exception as exc:  # a pcs refusal: its class and the start of its message
    outcome = f"refused: {type(exc).__name__}"
    message = str(exc)
print(json.dumps({"outcome": outcome, "ms": 1000 * (time.perf_counter() - start),
                  "message": locals().get("message", "")}))
"""


def alias_bomb(levels: int = 40, fanout: int = 9, flow: bool = False) -> str:
    """A billion-laughs document: each anchor lists the previous one ``fanout`` times."""
    first = "[" + ", ".join(["lol"] * fanout) + "]"
    if flow:
        items = [f"&l0 {first}"] + [
            f"&l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]" for i in range(1, levels)
        ]
        return "[" + ", ".join(items) + "]"
    lines = [f"l0: &l0 {first}"] + [
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]" for i in range(1, levels)
    ]
    return "\n".join(lines) + "\n"


def inputs() -> dict[str, dict[str, str]]:
    """{target: {"normal": text, "bomb": text}}, each about 3 KB."""
    import yaml

    components = {
        f"component_{i}": {
            "repo": "r",
            "file_path": f"agents/component_{i}.py",
            "class_name": f"Component{i}",
            "instantiate": True,
            "dependencies": {f"dep_{j}": f"component_{j}" for j in range(i % 4)},
        }
        for i in range(17)
    }
    normal_registry = yaml.safe_dump(
        {"pcs_format": 1, "repos": {"r": {"type": "local", "path": "."}}, "components": components},
        sort_keys=False,
    )
    bomb_registry = (
        "pcs_format: 1\nrepos:\n  r: {type: local, path: .}\ncomponents:\n  c:\n"
        "    repo: r\n    file_path: c.py\n    extra:\n"
        + textwrap.indent(alias_bomb(), " " * 6)
    )
    shared = "".join(f"    option_{i}: {i / 7:.5f}\n" for i in range(12))
    normal_args = "defaults:\n  shared: &shared\n" + shared + "".join(
        f"component_{c}:\n  __init__:\n    <<: *shared\n    own_{c}: {c}\n"
        f"  learn:\n    num_episodes: {10 * c}\n    tags: [a, b, c]\n"
        for c in range(24)
    )
    bomb_args = "agent:\n  run:\n    x:\n" + textwrap.indent(alias_bomb(), " " * 6)
    normal_value = json.dumps(
        [{"name": f"layer_{i}", "units": 64 * i, "dropout": 0.1} for i in range(48)]
    )
    return {
        "registry": {"normal": normal_registry, "bomb": bomb_registry},
        "arg_set": {"normal": normal_args, "bomb": bomb_args},
        "value": {"normal": normal_value, "bomb": alias_bomb(flow=True)},
    }


def measure(kind: str, path: Path, cap_bytes: int = 0) -> dict[str, Any]:
    """Load ``path`` as ``kind`` in a fresh child; its outcome, load time and peak RSS."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    ))
    out_path = path.with_suffix(f".{kind}.out")
    with open(out_path, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, str(path), str(cap_bytes)],
            stdout=out, stderr=subprocess.DEVNULL, env=env,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    lines = out_path.read_text(encoding="utf-8").splitlines()
    if child.returncode != 0 or not lines:
        return {"outcome": f"child exited with {child.returncode}", "ms": float("nan"),
                "peak_kib": usage.ru_maxrss}
    result = json.loads(lines[-1])
    result["peak_kib"] = usage.ru_maxrss  # Linux: KiB
    return result


def short(outcome: str, width: int = 34) -> str:
    outcome = " ".join(outcome.split())
    return outcome if len(outcome) <= width else outcome[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="children per case (default 3)")
    parser.add_argument("--json-out", type=Path, help="also write every number as JSON")
    parser.add_argument("--skip-unsafe", action="store_true",
                        help="leave out the yaml.safe_load + json.dumps baseline")
    parser.add_argument("--unsafe-cap-mib", type=int, default=1024,
                        help="address-space cap of the unsafe baseline child (default 1024)")
    args = parser.parse_args(argv)

    import yaml

    print(
        f"pcs input benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, PyYAML {yaml.__version__} "
        f"(libyaml: {'yes' if getattr(yaml, '__with_libyaml__', False) else 'no'}), "
        f"load average {[round(x, 2) for x in os.getloadavg()]}"
    )
    rows: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix=f"pcs-{os.getpid()}-bench-input-"))
    try:
        for target, texts in inputs().items():
            for name in ("normal", "bomb"):
                path = folder / f"{target}-{name}.yaml"
                path.write_text(texts[name], encoding="utf-8")
                runs = [measure(target, path) for _ in range(args.repeats)]
                rows.append({
                    "target": target, "input": name, "bytes": path.stat().st_size,
                    "outcome": runs[-1]["outcome"], "message": runs[-1].get("message", ""),
                    "median_ms": statistics.median(r["ms"] for r in runs),
                    "peak_mib": max(r["peak_kib"] for r in runs) / 1024,
                })
        if not args.skip_unsafe:
            for name in ("normal", "bomb"):
                path = folder / f"registry-{name}.yaml"
                runs = [measure("unsafe", path, args.unsafe_cap_mib * 2**20)
                        for _ in range(args.repeats if name == "normal" else 1)]
                rows.append({
                    "target": "yaml.safe_load+json.dumps", "input": name,
                    "bytes": path.stat().st_size, "outcome": runs[-1]["outcome"],
                    "median_ms": statistics.median(r["ms"] for r in runs),
                    "peak_mib": max(r["peak_kib"] for r in runs) / 1024,
                })
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    header = (
        f"{'reader':<26} {'input':<7} {'bytes':>5}  {'outcome':<34} {'load ms':>8} "
        f"{'peak RSS MiB':>12}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['target']:<26} {row['input']:<7} {row['bytes']:>5}  {short(row['outcome']):<34} "
            f"{row['median_ms']:>8.2f} {row['peak_mib']:>12.1f}"
        )
    print("load ms: inside the child, after imports (loading and walking the result)")
    for row in rows:
        if row.get("message"):
            print(f"  {row['target']} {row['input']}: {short(row['message'], 400)}")
    print("peak RSS, bomb minus normal (budget: under 50 MiB):")
    failed = False
    for target in ("registry", "arg_set", "value"):
        by_input = {r["input"]: r for r in rows if r["target"] == target}
        diff = by_input["bomb"]["peak_mib"] - by_input["normal"]["peak_mib"]
        refused = by_input["bomb"]["outcome"].startswith("refused: InputLimitError")
        failed |= diff >= 50 or not refused
        print(f"  {target:<9} {diff:+6.1f} MiB, bomb refused with InputLimitError: "
              f"{'yes' if refused else 'NO'}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
