"""What a run ran on: Python, the platform, installed distributions, seeds.

Distributions are read from the ``*.dist-info`` folders on ``sys.path`` (the
same data ``importlib.metadata`` reads, without parsing every METADATA file
and without a ``pip`` subprocess), so capturing them costs well under a
millisecond and is done once per process and ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import random
import re
import sys
from collections.abc import Mapping
from typing import Any

from pcs.specs import content_hash, dump_yaml

__all__ = [
    "capture_environment",
    "environment_yaml",
    "environment_fingerprint",
    "seed_everything",
    "draw_seed",
    "changed_distributions",
]

_CACHE: dict[tuple, dict[str, Any]] = {}
_DIST_RE = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+?)\.(dist-info|egg-info)$")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> dict[str, str]:
    """``{normalized name: version}`` of every distribution importable now."""
    found: dict[str, str] = {}
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for folder in names:
            match = _DIST_RE.match(folder)
            if match:
                # the first entry on sys.path wins, as it does for imports
                found.setdefault(_normalize(match["name"]), match["version"])
    return dict(sorted(found.items()))


def _path_key() -> tuple:
    """``sys.path`` with each folder's mtime: changes when a distribution is installed."""
    key = []
    for entry in sys.path:
        try:
            key.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            key.append((entry, 0))
    return tuple(key)


def capture_environment() -> dict[str, Any]:
    """Python, platform and distributions of this process (cached until an install)."""
    key = _path_key()
    cached = _CACHE.get(key)
    if cached is None:
        cached = {
            "python": {
                "version": platform.python_version(),
                "implementation": platform.python_implementation(),
                "executable": sys.executable,
            },
            "platform": {
                "system": platform.system(),
                "release": platform.release(),
                "machine": platform.machine(),
                "platform": platform.platform(),
            },
            "distributions": installed_distributions(),
        }
        _CACHE[key] = cached
    env = dict(cached)
    env["pythonhashseed"] = os.environ.get("PYTHONHASHSEED")
    env["fingerprint"] = environment_fingerprint(env)
    return env


_TEXT_CACHE: dict[tuple, tuple[str, str]] = {}


def environment_yaml(seed: int) -> tuple[str, str]:
    """``(fingerprint, text of pcs/environment.yaml)`` for a run with ``seed``.

    The part that does not change within a process (Python, platform,
    distributions) is rendered once; only the per-run fields are added.
    """
    key = _path_key()
    cached = _TEXT_CACHE.get(key)
    if cached is None:
        env = capture_environment()
        static = {k: env[k] for k in ("python", "platform", "distributions")}
        cached = (env["fingerprint"], dump_yaml(static))
        _TEXT_CACHE[key] = cached
    fingerprint, static_text = cached
    tail = dump_yaml(
        {"pythonhashseed": os.environ.get("PYTHONHASHSEED"), "fingerprint": fingerprint, "seed": seed}
    )
    return fingerprint, static_text + tail


def environment_fingerprint(env: Mapping[str, Any]) -> str:
    """A hash of what decides a computation's result: Python, OS, machine, distributions."""
    return content_hash(
        {
            "python": {k: env["python"][k] for k in ("version", "implementation")},
            "platform": {k: env["platform"][k] for k in ("system", "machine")},
            "distributions": env["distributions"],
        }
    )[:16]


def changed_distributions(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Readable lines for distributions added, removed or changed between two records."""
    lines = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a != b:
            lines.append(f"{name}: {a or 'absent'} -> {b or 'absent'}")
    return lines


def draw_seed() -> int:
    """A fresh seed from the OS's randomness."""
    return random.SystemRandom().randrange(2**32)


def seed_everything(seed: int) -> list[str]:
    """Seed ``random`` and, when installed, NumPy and PyTorch; return what was seeded."""
    import importlib.util

    random.seed(seed)
    seeded = ["random"]
    if "numpy" in sys.modules or importlib.util.find_spec("numpy") is not None:
        import numpy

        numpy.random.seed(seed % 2**32)
        seeded.append("numpy")
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(seed)
        seeded.append("torch")
    return seeded
