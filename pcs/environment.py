"""What a run ran on: Python, the platform, distributions, seeds and determinism facts.

Two records per component run:

- at its start, ``environment_yaml(seed)`` gives ``pcs/environment.yaml``:
  Python, platform, every installed distribution, ``PYTHONHASHSEED``, the
  :func:`determinism_record` and the seed;
- at its end, ``used_environment_yaml(module_names, report)`` gives
  ``pcs/environment_used.yaml``: the distributions the run imported
  (:func:`used_distributions`, pcs included), what they require
  (:func:`required_distributions`), the fingerprint over them, the
  determinism record as it stands after the run (frameworks it imported) and
  what :func:`seeded` seeded. Its keys override the start record's when the
  two are read together, so ``{**start, **end}`` is the run's environment.

Distributions come from ``importlib.metadata`` (names and versions from their
metadata, not from folder names), read once per ``sys.path`` state: a scan of
about a hundred distributions costs a few milliseconds, later calls nothing.
"""

from __future__ import annotations

import os
import platform
import random
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pcs._determinism import (
    SeedReport,
    determinism_record,
    determinism_suspects,
    seed_everything,
    seeded,
)
from pcs.specs import content_hash, dump_yaml

if TYPE_CHECKING:  # pragma: no cover
    from importlib.metadata import Distribution

__all__ = [
    "SeedReport",
    "capture_environment",
    "changed_distributions",
    "determinism_record",
    "determinism_suspects",
    "draw_seed",
    "environment_fingerprint",
    "environment_yaml",
    "installed_distributions",
    "required_distributions",
    "seed_everything",
    "seeded",
    "used_distributions",
    "used_environment_yaml",
]


def _normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# -- what is installed -----------------------------------------------------------------------


class _Scan:
    """Every distribution importable for one ``sys.path`` state."""

    def __init__(self, versions: dict[str, str], dists: dict[str, Distribution]) -> None:
        self.versions = versions  # normalized name -> version (the first on sys.path wins)
        self.dists = dists  # normalized name -> the distribution that wins
        self._providers: dict[str, list[str]] = {}  # top-level module -> normalized names
        self._files: dict[str, tuple[list[str], str]] = {}  # name -> (top_level.txt, RECORD)

    def providers(self, top: str) -> list[str]:
        """The distributions that install the top-level module ``top``.

        The answer of ``importlib.metadata.packages_distributions()[top]``:
        the names a distribution declares in ``top_level.txt``, else the
        top-level folders and modules of the Python files in its ``RECORD``.
        Only the names asked for are looked up (a substring search per
        distribution), which is far cheaper than building the whole map.
        """
        found = self._providers.get(top)
        if found is None:
            found = [name for name, dist in self.dists.items() if self._provides(name, dist, top)]
            self._providers[top] = found
        return found

    def _provides(self, name: str, dist: Distribution, top: str) -> bool:
        files = self._files.get(name)
        if files is None:
            declared = (dist.read_text("top_level.txt") or "").split()
            files = (declared, "" if declared else "\n" + (dist.read_text("RECORD") or ""))
            self._files[name] = files
        declared, record = files
        if declared:
            return top in declared
        # a line of RECORD starting with the name, then "/" (a package), ".py," or an extension
        needle = "\n" + top
        at = record.find(needle)
        while at != -1:
            rest = record[at + len(needle) : record.find(",", at)]
            if rest.startswith("/") or rest == ".py" or rest in _extension_suffixes():
                return True
            at = record.find(needle, at + 1)
        return False


def _extension_suffixes() -> list[str]:
    from importlib.machinery import EXTENSION_SUFFIXES

    return EXTENSION_SUFFIXES


_SCANS: dict[tuple, _Scan] = {}


def _remember(cache: dict, key: Any, value: Any, size: int = 4) -> None:
    """Keep the last few ``sys.path`` states (a component's folder is on it while it loads)."""
    cache[key] = value
    while len(cache) > size:
        del cache[next(iter(cache))]


def _path_key() -> tuple:
    """``sys.path`` with each folder's mtime: changes when a distribution is installed."""
    key = []
    for entry in sys.path:
        try:
            key.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            key.append((entry, 0))
    return tuple(key)


def _metadata_text(dist: Distribution) -> str:
    # where importlib.metadata itself looks: wheels, egg-info folders, egg-info files
    return dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("") or ""


def _name_and_version(dist: Distribution) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` from the metadata's header, which ends at the first blank line.

    Reading two header fields instead of parsing the whole message (with its
    long description) makes the scan several times faster; the answer is
    ``dist.metadata["Name"]`` and ``dist.version``.
    """
    name = version = None
    for line in _metadata_text(dist).partition("\n\n")[0].splitlines():
        if not line.strip():
            break
        if name is None and line.startswith("Name:"):
            name = line[5:].strip()
        elif version is None and line.startswith("Version:"):
            version = line[8:].strip()
        if name and version:
            return name, version
    if name is None or version is None:  # an unusual file: let importlib.metadata parse it
        try:
            name, version = name or dist.metadata["Name"], version or dist.version
        except Exception:  # noqa: BLE001 - unreadable metadata is a broken install, skip it
            return None, None
    return name, version


def _scan() -> _Scan:
    key = _path_key()
    scan = _SCANS.get(key)
    if scan is None:
        from importlib.metadata import distributions

        versions: dict[str, str] = {}
        dists: dict[str, Distribution] = {}
        for dist in distributions():
            name, version = _name_and_version(dist)
            if not name or version is None:
                continue
            normalized = _normalize(name)
            if normalized in versions:
                continue  # shadowed by one earlier on sys.path, as for imports
            versions[normalized] = version
            dists[normalized] = dist
        scan = _Scan(dict(sorted(versions.items())), dists)
        _remember(_SCANS, key, scan)
    return scan


def installed_distributions() -> dict[str, str]:
    """``{normalized name: version}`` of every distribution importable now.

    Returns:
        Names normalized as PEP 503 does, sorted; the first on ``sys.path`` wins.
    """
    return dict(_scan().versions)


def _pcs_version() -> str:
    from pcs import __version__

    return __version__


def used_distributions(module_names: Iterable[str]) -> dict[str, str]:
    """The distributions that provide ``module_names``, with pcs itself, at their versions.

    Standard-library modules and modules no distribution provides (component
    files, local helpers) are left out. pcs is always in, at the version of
    the pcs that is running.

    Args:
        module_names: names of modules the run's code imported (``"numpy"``,
            ``"numpy.linalg"``: only the top-level part counts).

    Returns:
        ``{normalized distribution name: version}``, sorted.
    """
    scan = _scan()
    stdlib = sys.stdlib_module_names  # type: ignore[attr-defined]  # Python 3.10+
    used: dict[str, str] = {}
    for name in module_names:
        top = name.partition(".")[0]
        if not top or top in stdlib or top in sys.builtin_module_names:
            continue
        for dist in scan.providers(top):
            used[dist] = scan.versions[dist]
    used["pcs"] = _pcs_version()
    return dict(sorted(used.items()))


_CLOSURES: dict[tuple, dict[str, str]] = {}


def required_distributions(used: Mapping[str, str]) -> dict[str, str]:
    """What ``used`` require, transitively, at the versions installed now (``used`` left out).

    pcs's own requirements are not followed: a rebuilt environment reaches
    pcs's runtime through the environment pcs runs from. A requirement that
    is not installed here is left out (it was not met where the run ran
    either).

    Args:
        used: ``{normalized name: version}``, e.g. from :func:`used_distributions`.

    Returns:
        ``{normalized name: version}``, sorted.
    """
    from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
    from packaging.requirements import InvalidRequirement, Requirement

    scan = _scan()
    key = (_path_key(), tuple(sorted(used)))
    cached = _CLOSURES.get(key)
    if cached is not None:
        return dict(cached)
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset()) for name in used if name != "pcs"]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        item = todo.pop()
        if item in done:
            continue
        done.add(item)
        name, extras = item
        dist = scan.dists.get(name)
        if dist is None:
            continue
        for text in dist.requires or []:
            try:
                requirement = Requirement(text)
                wanted = requirement.marker is None or any(
                    requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)
                )
            except (InvalidRequirement, InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                continue  # metadata pip would refuse too
            dependency = _normalize(requirement.name)
            if not wanted or dependency == "pcs" or dependency not in scan.versions:
                continue
            if dependency not in used:
                found[dependency] = scan.versions[dependency]
            todo.append((dependency, frozenset(_normalize(e) for e in requirement.extras)))
    result = dict(sorted(found.items()))
    _remember(_CLOSURES, key, result)
    return dict(result)


# -- the records -----------------------------------------------------------------------------


_STATIC: dict[str, Any] = {}


def _python_and_platform() -> dict[str, Any]:
    """The parts that cannot change within a process (computed once)."""
    if not _STATIC:
        _STATIC["python"] = {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        }
        _STATIC["platform"] = {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
        }
    return {"python": dict(_STATIC["python"]), "platform": dict(_STATIC["platform"])}


def capture_environment() -> dict[str, Any]:
    """Python, platform, installed distributions and determinism facts of this process.

    Returns:
        The start record of a run without its seed (see :func:`environment_yaml`).
    """
    env = _python_and_platform()
    env["distributions"] = installed_distributions()
    env["pythonhashseed"] = os.environ.get("PYTHONHASHSEED")
    env["determinism"] = determinism_record()
    env["fingerprint"] = environment_fingerprint(env)
    return env


_TEXT_CACHE: dict[tuple, tuple[str, str]] = {}


def environment_yaml(seed: int) -> tuple[str, str]:
    """``(fingerprint, text of pcs/environment.yaml)`` for a run starting now with ``seed``.

    The part that does not change within a process (Python, platform,
    distributions) is rendered once per ``sys.path`` state; the hash seed,
    determinism facts and seed are added per run. The fingerprint here is
    over every installed distribution: the run's end record replaces it with
    the one over the distributions it used (see :func:`used_environment_yaml`).

    Args:
        seed: the run's seed.

    Returns:
        The fingerprint and the YAML text.
    """
    key = _path_key()
    cached = _TEXT_CACHE.get(key)
    if cached is None:
        static = _python_and_platform()
        static["distributions"] = installed_distributions()
        cached = (environment_fingerprint(static), dump_yaml(static))
        _remember(_TEXT_CACHE, key, cached)
    fingerprint, static_text = cached
    tail = dump_yaml(
        {
            "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
            "determinism": determinism_record(),
            "fingerprint": fingerprint,
            "seed": seed,
        }
    )
    return fingerprint, static_text + tail


def used_environment_yaml(
    module_names: Iterable[str], seed_report: SeedReport | None = None
) -> tuple[str, str]:
    """``(fingerprint, text of pcs/environment_used.yaml)`` for a run that is ending.

    Args:
        module_names: the modules the run's code imported (see :func:`used_distributions`).
        seed_report: what :func:`seeded` seeded during the run.

    Returns:
        The fingerprint over Python, platform and the used distributions (pcs
        included), which a rerun in the environment rebuilt from this record
        reproduces, and the YAML text.
    """
    used = used_distributions(module_names)
    record: dict[str, Any] = _python_and_platform()
    record["used_distributions"] = used
    fingerprint = environment_fingerprint(record)
    end = {
        "used_distributions": used,
        "required_distributions": required_distributions(used),
        "fingerprint": fingerprint,
        "determinism": determinism_record(),
    }
    if seed_report is not None:
        end["seeded"] = seed_report.to_dict()
    return fingerprint, dump_yaml(end)


def environment_fingerprint(env: Mapping[str, Any]) -> str:
    """A hash of what decides a computation's result.

    Python version and implementation, OS and machine, and the distributions
    the run used (``used_distributions``, pcs included) when recorded; a
    record without them (the start record, or a run from an older pcs) is
    hashed over every installed distribution.

    Args:
        env: an environment record (``{**start, **end}``, or either alone).

    Returns:
        16 hex digits.
    """
    python = {k: env["python"][k] for k in ("version", "implementation")}
    system = {k: env["platform"][k] for k in ("system", "machine")}
    if env.get("used_distributions") is not None:
        return content_hash(
            {"python": python, "platform": system, "used_distributions": env["used_distributions"]}
        )[:16]
    return content_hash({"python": python, "platform": system, "distributions": env["distributions"]})[:16]


def changed_distributions(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Readable lines for distributions added, removed or changed between two records.

    Args:
        old: ``{name: version}`` of the first record.
        new: ``{name: version}`` of the second.

    Returns:
        ``"name: old -> new"`` lines, sorted by name.
    """
    lines = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a != b:
            lines.append(f"{name}: {a or 'absent'} -> {b or 'absent'}")
    return lines


def draw_seed() -> int:
    """A fresh seed from the OS's randomness.

    Returns:
        An integer in ``[0, 2**32)``.
    """
    return random.SystemRandom().randrange(2**32)
