"""The record of one component run, staged as files and tags: at its start, while it runs, at its end.

:class:`Record` is what ``ComponentRun`` calls; it is told about the command
through :class:`Facts` and asks the other parts of :mod:`pcs.record` for the
files and tags they contribute.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcs import _keys
from pcs.record.closure import Part, Session
from pcs.record.code import (
    capture_code,
    capture_requirements,
    describe_closure,
    place_text,
    write_sources,
)
from pcs.record.determinism import SeedReport, seeded
from pcs.record.environ import EnvReads
from pcs.record.environment import (
    environment_yaml,
    loaded_modules,
    modules_used_by_run,
    used_environment_yaml,
)
from pcs.record.grade import Grade, grade_at_start, reads_reason
from pcs.record.imports import ImportWatch
from pcs.record.inputs import RunInputs
from pcs.record.reads import FileReads, by_root, describe, snapshot_limit
from pcs.specs import dump_yaml

__all__ = ["Facts", "LoadReads", "Record", "watch_loading"]


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What a record is told of a run command; the run core gathers it, the record never asks back.

    Args:
        identifier: the run command's identifier.
        entry_point: the entry point it calls.
        seed: its seed.
        parts: its components, root first.
        code: its code map (components and their closure modules, see
            :mod:`pcs.run_command`).
        sources: snapshot texts by sha256 that this process holds.
        imports: top-level names of modules its code imports from elsewhere.
        closure_problems: closure modules the snapshot cannot hold.
        recorded_code: the ``code.yaml`` of the run a rerun of recorded code reproduces.
        registry_text: renders ``pcs/run_command.yaml`` (only when it is written).
        loaded: the inputs read while the components loaded (see :func:`watch_loading`).
    """

    identifier: str
    entry_point: str
    seed: int
    parts: Sequence[Part]
    code: Mapping[str, dict[str, str]]
    sources: Mapping[str, str]
    imports: AbstractSet[str]
    closure_problems: Sequence[str]
    recorded_code: Mapping[str, Any] | None
    registry_text: Callable[[], str]
    loaded: LoadReads | None = None  # what loading the components read (module-level code)


class LoadReads:
    """The data files and environment variables read while components load (module-level code).

    Loading happens before the run exists (``RunCommand.create``, or at the start
    of ``ComponentRun.execute``); what it read joins the run's inputs at its end.
    """

    def __init__(self, roots: Mapping[str, Path]) -> None:
        self.roots = {os.path.realpath(path): key for key, path in roots.items()}
        self.env: dict[str, Any] = {}
        self.files: list[tuple[str, str]] = []  # (root, relative path)
        self._reads = FileReads(list(self.roots))
        self._env = EnvReads()

    def __enter__(self) -> LoadReads:
        self._reads.__enter__()
        self._env.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._env.__exit__(*exc)
        self._reads.__exit__(*exc)
        self.env = self._env.recorded()
        self.files = self._reads.located()


def watch_loading(session: Session) -> LoadReads:
    """A watch over what loading the components of an open ``session`` reads."""
    return LoadReads({t.key: t.root for t in session.trees if t.root is not None})


class Record:
    """The artifacts and tags of a component run, staged in a temp folder.

    :meth:`start` stages what is recorded before the run exists; :meth:`watching`
    is active while the entry point runs; :meth:`end` stages what the end of the
    run adds; :meth:`cleanup` removes the temp folder.
    """

    def __init__(self, tmp: tempfile.TemporaryDirectory, facts: Facts, tags: dict[str, str],
                 grade: Grade, code_record: dict[str, Any]) -> None:
        self._tmp = tmp
        self.folder = Path(tmp.name)  # uploaded as the run's artifacts at its start
        self.facts = facts
        self.tags = tags  # the tags of the run at its start
        self.grade = grade
        self.code_record = code_record
        self.reads: FileReads | None = None
        self.env_reads: EnvReads | None = None
        self.run_inputs: RunInputs | None = None
        self._roots: dict[str, str] = {}  # watched folder -> component key
        self.seed_report: SeedReport | None = None
        self.imports: list[str] | None = None  # third-party top-level modules, once the end is staged
        self._loaded_before: frozenset[str] = frozenset()
        self.imported = ImportWatch()  # modules the code imports, loaded before the run or not

    # -- at the start -----------------------------------------------------------------------------

    @classmethod
    def start(cls, facts: Facts) -> Record:
        """Stage every artifact and tag of a new component run, before the run exists."""
        _run_names_unseeded()
        tmp = tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-record-")
        root = Path(tmp.name)
        pcs_dir = root / _keys.PCS_ARTIFACT_DIR
        pcs_dir.mkdir()
        parts = facts.parts
        (root / _keys.RUN_COMMAND_ARTIFACT).write_text(facts.registry_text(), encoding="utf-8")
        write_sources(parts, facts.code, facts.sources, root / _keys.CODE_FILES_DIR)
        fingerprint, env_text = environment_yaml(facts.seed)
        place_text(root / _keys.ENVIRONMENT_ARTIFACT, env_text)

        code_record, git_tags, git_problems = capture_code(parts, facts.code, facts.recorded_code, pcs_dir)
        requirements, req_problems = capture_requirements(parts, pcs_dir)
        code_record["requirements"] = requirements
        place_text(root / _keys.CODE_ARTIFACT, dump_yaml(code_record))

        grade = grade_at_start(
            (problem for part in parts for problem in part.problems()),
            facts.closure_problems, git_problems, req_problems,
        )
        tags = {
            _keys.RUN_COMMAND_ID: facts.identifier,
            _keys.COMPONENT: parts[0].key,
            _keys.ENTRY_POINT: facts.entry_point,
            _keys.SEED: str(facts.seed),
            _keys.ENVIRONMENT_FINGERPRINT: fingerprint,
            **grade.tags(),
            **git_tags,
        }
        return cls(tmp, facts, tags, grade, code_record)

    # -- while the entry point runs ---------------------------------------------------------------

    @contextmanager
    def watching(self, roots: Mapping[str, Path] | None = None) -> Iterator[None]:
        """Seed the run, and watch what it reads and imports, while the block runs.

        Args:
            roots: the folder each component's files are loaded from, by its
                key (default: the live folders of local components); the data
                files read under them are recorded.
        """
        if roots is None:
            roots = {p.key: p.live_root for p in self.facts.parts if p.live_root is not None}
        self._roots = {os.path.realpath(path): key for key, path in roots.items()}
        for part in self.facts.parts:
            if part.data_root is not None:
                # a rerun of recorded code: the files the run read where they were (a link
                # next to the code leads there; code may also read them by a relative path)
                self._roots.setdefault(os.path.realpath(part.data_root), part.key)
        self.reads = FileReads(list(self._roots))
        self.env_reads = EnvReads()
        self.run_inputs = RunInputs()
        self._loaded_before = loaded_modules()  # once per run: C-level copy of the names
        with seeded(self.facts.seed) as self.seed_report, self.reads, self.env_reads, self.run_inputs, \
                self.imported:
            yield

    # -- at the end -------------------------------------------------------------------------------

    def end_folder(self) -> Path:
        """The folder of what the end of the run records (uploaded as ``pcs/``)."""
        end = self.folder / "end"
        end.mkdir(exist_ok=True)
        return end

    def end(self, folder: Path, facts: Facts, grew: bool, tags: dict[str, str]) -> None:
        """Stage in ``folder`` what the end of a run records; add its tags to ``tags``.

        That is: the modules its code imported from elsewhere, the record rewritten
        when the closure grew while the entry point ran (``grew``: modules first
        imported then), the distributions it used, and a grade lowered for the
        data files it read next to its code.

        Args:
            folder: from :meth:`end_folder`.
            facts: the command as it is now (its closure may have grown).
            grew: whether the code map changed while the entry point ran.
            tags: filled in place, so what was staged before a failure is kept.
        """
        self.imports = _third_party(facts.imports)
        if facts.imports:  # none: no file, read as an empty list
            (folder / Path(_keys.IMPORTS_ARTIFACT).name).write_text(dump_yaml({
                "pcs_format": _keys.FORMAT_VERSION,
                "modules": self.imports,
                "stdlib": sorted(n for n in facts.imports if n in sys.stdlib_module_names),
            }), encoding="utf-8")
        if grew:
            # modules first imported while the entry point ran: the record must cover them
            self._rewrite(facts, folder)
            tags[_keys.RUN_COMMAND_ID] = facts.identifier
        # the distributions the run used, which a rebuilt environment installs
        names = modules_used_by_run(facts.sources, self._loaded_before, self.imported.names)
        fingerprint, text = used_environment_yaml(names | set(facts.imports), self.seed_report)
        place_text(folder / Path(_keys.ENVIRONMENT_USED_ARTIFACT).name, text)
        tags[_keys.ENVIRONMENT_FINGERPRINT] = fingerprint
        self._stage_inputs(folder, tags)

    def _stage_inputs(self, folder: Path, tags: dict[str, str]) -> None:
        """Stage ``inputs.yaml``: the data files read (by sha256 and size), the environment
        variables read, the artifacts loaded from other runs; lower the grade for data files."""
        if self.reads is None:
            return  # the entry point never ran
        loaded = self.facts.loaded
        located = set(self.reads.located())
        env = self.env_reads.recorded() if self.env_reads else {}
        if loaded is not None:  # module-level code read these before the entry point ran
            located |= set(loaded.files)
            for root, key in loaded.roots.items():
                self._roots.setdefault(root, key)
            env = {**loaded.env, **{k: v for k, v in env.items() if k not in loaded.env}}
        files = describe(sorted(located))
        record: dict[str, Any] = {
            "pcs_format": _keys.FORMAT_VERSION,
            "data": by_root(files, self._roots),
            "data_watch": {"method": self.reads.method, "partial": self.reads.partial,
                           "events_lost": self.reads.overflowed},
            "env": dict(sorted(env.items())),
            "runs": self.run_inputs.to_dict() if self.run_inputs else {},
            # not an input: the files it wrote (path -> size), for "written, not recorded"
            "written": self.reads.written(),
        }
        place_text(folder / Path(_keys.INPUTS_ARTIFACT).name, dump_yaml(record))
        kept = folder / Path(_keys.DATA_SNAPSHOT_DIR).name
        for f in files:
            if f.snapshot:  # a rerun of the recorded code finds it next to that code
                kept.mkdir(exist_ok=True)
                shutil.copyfile(os.path.join(f.root, *f.path.split("/")), kept / f.sha256)
        too_large = [f.path for f in files if not f.snapshot]
        if too_large:
            tags.update(self.lower_grade(reads_reason(too_large, snapshot_limit())))
        if self.reads.overflowed:
            tags.update(self.lower_grade(
                "the kernel dropped file events while it ran (too many at once), so data files "
                "it read may be missing from its record"
            ))

    def lower_grade(self, reason: str) -> dict[str, str]:
        """Lower the grade for something found at the end of the run; the grade's tags."""
        self.grade.lower(reason)
        return self.grade.tags()

    def _rewrite(self, facts: Facts, folder: Path) -> None:
        """Stage, in ``folder`` (uploaded as ``pcs/``), the record of a closure that grew during the run."""
        (folder / Path(_keys.RUN_COMMAND_ARTIFACT).name).write_text(facts.registry_text(), encoding="utf-8")
        write_sources(facts.parts, facts.code, facts.sources, folder / Path(_keys.CODE_FILES_DIR).name)
        describe_closure(facts.parts, facts.code, self.code_record)
        place_text(folder / Path(_keys.CODE_ARTIFACT).name, dump_yaml(self.code_record))

    def cleanup(self) -> None:
        """Remove the staged files."""
        self._tmp.cleanup()


def _run_names_unseeded() -> None:
    """Give MLflow's run-name generator a ``random.Random`` of its own.

    MLflow draws the names of runs it names (``chill-owl-867``) from the global
    ``random``, which a run seeds: every run of one seed was named alike, and
    creating a nested run with ``mlflow.start_run()`` took numbers from the
    code's seeded sequence on a local store but not on a tracking server (which
    names runs in its own process), so the same code drew other numbers there.
    """
    try:
        from mlflow.utils import name_utils
    except ImportError:  # pragma: no cover - MLflow is a dependency
        return
    if getattr(name_utils, "random", None) is random:
        name_utils.random = random.Random()  # type: ignore[assignment]  # seeded from the OS


def _third_party(names: AbstractSet[str]) -> list[str]:
    """The top-level module names that are not part of the standard library, sorted."""
    return sorted(n for n in names if n not in sys.stdlib_module_names and not n.startswith("_pcs"))
