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
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pcs.record.determinism import (
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
    "imported_modules",
    "installed_distributions",
    "loaded_modules",
    "loaded_top_level_modules",
    "modules_used_by_run",
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

    def __init__(
        self, versions: dict[str, str], dists: dict[str, Distribution], requires: dict[str, list[str]]
    ) -> None:
        self.versions = versions  # normalized name -> version (the first on sys.path wins)
        self.dists = dists  # normalized name -> the distribution that wins
        self.requires = requires  # normalized name -> its Requires-Dist lines
        self._parsed: dict[str, list[tuple[str, Any, frozenset[str]]]] = {}
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

    def requirements(self, name: str) -> list[tuple[str, Any, frozenset[str]]]:
        """``(normalized name, marker or None, extras)`` of each requirement of ``name``."""
        parsed = self._parsed.get(name)
        if parsed is None:
            from packaging.requirements import InvalidRequirement, Requirement

            parsed = []
            for text in self.requires.get(name, ()):
                try:
                    requirement = Requirement(text)
                except InvalidRequirement:
                    continue  # metadata pip would refuse too
                extras = frozenset(_normalize(e) for e in requirement.extras)
                parsed.append((_normalize(requirement.name), requirement.marker, extras))
            self._parsed[name] = parsed
        return parsed

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


_LISTINGS: dict[str, tuple[int, frozenset[str]]] = {}
_METADATA_SUFFIXES = (".dist-info", ".egg-info", ".egg")


def _path_key() -> tuple:
    """``sys.path`` with the metadata folders in each entry: changes when one is installed.

    A folder is listed again only when its mtime changed, so the key costs a
    ``stat`` per entry; a working directory that changes all the time (a run
    writing artifacts or a SQLite journal there) does not count as an install.
    """
    key: list[tuple[str, frozenset[str] | None]] = []
    for entry in sys.path:
        folder = os.path.abspath(entry or ".")
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            key.append((folder, None))
            continue
        known = _LISTINGS.get(folder)
        if known is None or known[0] != mtime:
            try:
                names = frozenset(n for n in os.listdir(folder) if n.endswith(_METADATA_SUFFIXES))
            except OSError:  # a zip file, or unreadable
                names = frozenset()
            known = (mtime, names)
            _LISTINGS[folder] = known
        key.append((folder, known[1]))
    return tuple(key)


def _metadata_text(dist: Distribution) -> str:
    # where importlib.metadata itself looks: wheels, egg-info folders, egg-info files
    return dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("") or ""


def _header(dist: Distribution) -> tuple[str | None, str | None, list[str]]:
    """``Name``, ``Version`` and ``Requires-Dist`` from the metadata's header.

    The header ends at the first blank line; reading a few fields of it
    instead of parsing the whole message (with its long description) makes
    the scan several times faster. The answers are ``dist.metadata["Name"]``,
    ``dist.version`` and ``dist.requires``.
    """
    name = version = None
    requires: list[str] = []
    for line in _metadata_text(dist).partition("\n\n")[0].splitlines():
        if not line:
            break  # a blank line ends the header; lines of spaces continue a folded field
        if name is None and line.startswith("Name:"):
            name = line[5:].strip()
        elif version is None and line.startswith("Version:"):
            version = line[8:].strip()
        elif line.startswith("Requires-Dist:"):
            requires.append(line[14:].strip())
    if name is None or version is None:  # an unusual file: let importlib.metadata parse it
        try:
            name, version = name or dist.metadata["Name"], version or dist.version
        except Exception:  # noqa: BLE001 - unreadable metadata is a broken install, skip it
            return None, None, []
    if not requires and dist.read_text("requires.txt") is not None:
        requires = list(dist.requires or [])  # an egg-info keeps them in requires.txt
    return name, version, requires


def _scan() -> _Scan:
    key = _path_key()
    scan = _SCANS.get(key)
    if scan is None:
        from importlib.metadata import distributions

        versions: dict[str, str] = {}
        dists: dict[str, Distribution] = {}
        requires: dict[str, list[str]] = {}
        for dist in distributions():
            name, version, needs = _header(dist)
            if not name or version is None:
                continue
            normalized = _normalize(name)
            if normalized in versions:
                continue  # shadowed by one earlier on sys.path, as for imports
            versions[normalized] = version
            dists[normalized] = dist
            requires[normalized] = needs
        scan = _Scan(dict(sorted(versions.items())), dists, requires)
        _remember(_SCANS, key, scan)
    return scan


def installed_distributions() -> dict[str, str]:
    """``{normalized name: version}`` of every distribution importable now.

    Returns:
        Names normalized as PEP 503 does, sorted; the first on ``sys.path`` wins.
    """
    return dict(_scan().versions)


def _pcs_version() -> str:
    from pcs._version import __version__

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


def imported_modules(sources: Iterable[str] | Mapping[str, str]) -> set[str]:
    """Top-level modules that Python sources import (anywhere in them, functions included).

    Relative imports (files next to a component) are left out: no
    distribution provides them.

    Args:
        sources: source texts, e.g. a run's component source snapshots; or a
            mapping of each text's sha256 to the text (a run's ``sources``),
            whose answers are remembered by the sha256 for the process.

    Returns:
        Top-level module names, e.g. ``{"numpy", "random"}``.
    """
    names: set[str] = set()
    if isinstance(sources, Mapping):
        for digest, source in sources.items():
            found = _IMPORTS_BY_DIGEST.get(digest)
            if found is None:
                if len(_IMPORTS_BY_DIGEST) >= _IMPORTS_REMEMBERED:
                    _IMPORTS_BY_DIGEST.clear()
                found = _IMPORTS_BY_DIGEST[digest] = _imports_of(source)
            names |= found
        return names
    for source in sources:
        names |= _imports_of(source)
    return names


# every source of a closure is looked at each run, in the same order: a cache of texts smaller
# than the closure missed on every call (a run of 500 helper modules parsed all 500 each time);
# by sha256, a closure of any size is parsed once per process
_IMPORTS_BY_DIGEST: dict[str, frozenset[str]] = {}
_IMPORTS_REMEMBERED = 50_000


@lru_cache(maxsize=256)
def _imports_of(source: str) -> frozenset[str]:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return frozenset(names)


def loaded_top_level_modules() -> frozenset[str]:
    """The top-level names of every module imported in this process so far.

    Returns:
        Top-level module names.
    """
    return frozenset(name.partition(".")[0] for name in list(sys.modules))


def loaded_modules() -> frozenset[str]:
    """The names of every module imported in this process so far: a run's snapshot at its start.

    Handed to :func:`modules_used_by_run` at the run's end, which finds what the
    run imported that nothing had imported before. The copy is made in C (no
    Python code per module), so it stays cheap in a process holding tens of
    thousands of modules; :func:`loaded_top_level_modules` walks them in Python.

    Returns:
        Module names, submodules included.
    """
    return frozenset(sys.modules)


def _new_top_level_modules(loaded_before: frozenset[str]) -> set[str]:
    """Top-level names of modules loaded since ``loaded_before`` that it did not hold."""
    names = sys.modules.keys()
    if len(names) == len(loaded_before) and names == loaded_before:
        return set()  # nothing new: one comparison in C
    return {name.partition(".")[0] for name in names - loaded_before} - loaded_before


_CLOSURES: dict[tuple, frozenset[str]] = {}


def _closure(names: Iterable[str], *, into_pcs: bool) -> frozenset[str]:
    """Normalized names of what ``names`` require, transitively, among installed distributions.

    ``into_pcs`` follows pcs's own requirements too (its runtime); otherwise
    the walk stops at pcs.
    """
    from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName

    scan = _scan()
    start = frozenset(names)
    key = (_path_key(), start, into_pcs)
    cached = _CLOSURES.get(key)
    if cached is not None:
        return cached
    found: set[str] = set()
    none: frozenset[str] = frozenset()
    todo: list[tuple[str, frozenset[str]]] = [
        (name, none) for name in start if into_pcs or name != "pcs"
    ]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        item = todo.pop()
        if item in done:
            continue
        done.add(item)
        name, extras = item
        for dependency, marker, wanted_extras in scan.requirements(name):
            if dependency not in scan.versions or (dependency == "pcs" and not into_pcs):
                continue
            if marker is not None:
                try:
                    if not any(marker.evaluate({"extra": extra}) for extra in ("", *extras)):
                        continue
                except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                    continue
            found.add(dependency)
            todo.append((dependency, wanted_extras))
    result = frozenset(found - start)
    _remember(_CLOSURES, key, result)
    return result


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
    versions = _scan().versions
    return {name: versions[name] for name in sorted(_closure(used, into_pcs=False))}


def modules_used_by_run(
    sources: Iterable[str] | Mapping[str, str], loaded_before: frozenset[str],
    imported: Iterable[str] = (),
) -> set[str]:
    """The modules a run's code used: what its sources import, and what it loaded on the way.

    The second part (top-level modules first imported while the run ran)
    catches imports no source names (``importlib.import_module``, plugins),
    leaving out modules of pcs's own runtime (MLflow loading more of itself
    during a process's first run), which a rebuilt environment reaches anyway.
    Transitive imports need no listing: :func:`required_distributions`
    follows the requirements of what is listed.

    Args:
        sources: the source texts of the run's components (or sha256 -> text).
        loaded_before: :func:`loaded_modules` (or :func:`loaded_top_level_modules`)
            taken when the run started executing (after pcs created it, before its
            objects were built).
        imported: top-level names the run's code imported while it ran, also
            modules loaded before it (:class:`pcs.record.imports.ImportWatch`), so an
            in-process rerun counts what its original loaded first; treated as the
            newly loaded ones (pcs's runtime left out).

    Returns:
        Top-level module names for :func:`used_environment_yaml`.
    """
    names = imported_modules(sources)
    stdlib = sys.stdlib_module_names  # type: ignore[attr-defined]  # Python 3.10+
    new = [top for top in _new_top_level_modules(loaded_before) | set(imported)
           if top not in names and top not in stdlib]
    if new:
        scan = _scan()
        runtime: frozenset[str] | None = None
        for top in new:
            providers = scan.providers(top)
            if providers:
                if runtime is None:  # pcs's runtime, worked out only when needed
                    runtime = _closure(["pcs"], into_pcs=True) | {"pcs"}
                if not set(providers) <= runtime:
                    names.add(top)
    return names


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
        included) with their requirements, which a rerun in the environment rebuilt from this record
        reproduces, and the YAML text.
    """
    used = used_distributions(module_names)
    required = required_distributions(used)
    record: dict[str, Any] = _python_and_platform()
    record.update(used_distributions=used, required_distributions=required)
    fingerprint = environment_fingerprint(record)
    end = {
        "used_distributions": used,
        "required_distributions": required,
        "fingerprint": fingerprint,
        "determinism": determinism_record(),
    }
    if seed_report is not None:
        end["seeded"] = seed_report.to_dict()
    return fingerprint, dump_yaml(end)


def environment_fingerprint(env: Mapping[str, Any]) -> str:
    """A hash of what decides a computation's result.

    Python version and implementation, OS and machine, and the distributions
    the run used with what they require (``used_distributions``, pcs
    included, and ``required_distributions``) when recorded; a record without them (the start record, or a run from an older pcs) is
    hashed over every installed distribution.

    Args:
        env: an environment record (``{**start, **end}``, or either alone).

    Returns:
        16 hex digits.
    """
    python = {k: env["python"][k] for k in ("version", "implementation")}
    system = {k: env["platform"][k] for k in ("system", "machine")}
    if env.get("used_distributions") is not None:
        used = {**(env.get("required_distributions") or {}), **env["used_distributions"]}
        return content_hash({"python": python, "platform": system, "used_distributions": used})[:16]
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
