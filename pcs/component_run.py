"""ComponentRun: a run produced by a RunCommand, which it carries.

When a component run starts, before any user code, pcs records in the MLflow
run (one ``create_run`` with every tag, one ``log_artifacts`` with every file):

- ``pcs/run_command.yaml``: a registry with the command, its components and repos;
- ``pcs/code/<path>``: the source of every component, and of every module in
  its closure (the modules it loads from its own repo), as run, under its path
  in the repo (``pcs/source/<sha256>.py`` in runs recorded before);
- ``pcs/environment.yaml``: Python, platform, distributions;
- ``pcs/code.yaml`` (+ ``pcs/git_diff/``): where the sources were on disk and
  where they sit in git;
- tags: run command id, entry point, seed, environment fingerprint, git commit,
  reproducibility grade with its reasons.

The components are loaded before the run exists, in a fresh module namespace
that stays active while the entry point runs (see :mod:`pcs.record.closure`).
What the record holds is built by :mod:`pcs.record`, which this module calls
with what it knows of the command (``RunCommand._facts()``). What the entry
point prints is shown live and captured (see :mod:`pcs._capture`).

At the end of the run (also when it fails), in one upload: the return value
(``pcs/return_value.yaml``, tag ``pcs.return_value_sha256``), the captured
``pcs/stdout.txt`` and ``pcs/stderr.txt`` (when written to), ``pcs/imports.yaml``
(the top-level modules the code imports from elsewhere, when any), and, when the entry point
imported modules of its repo that were not known at the start (dynamic
imports), the record rewritten to cover them (run command, its id tag,
snapshot and ``pcs/code.yaml``); ``pcs/inputs.yaml`` (data files, environment
variables and other runs' artifacts the entry point read) and ``pcs/data/``
(the small data files, kept).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import tempfile
import traceback
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pcs import _keys, _signals
from pcs._capture import OutputCapture
from pcs._features import feature
from pcs._limits import MAX_DEPTH, MAX_YAML_BYTES
from pcs._redact import redact_text
from pcs._yaml import load_json, load_yaml
from pcs.argument_set import ArgumentSet
from pcs.component import call_entry_point
from pcs.errors import (
    ArgumentError,
    InputLimitError,
    NotReproducibleError,
    PcsError,
)
from pcs.progress import ProgressCallback
from pcs.record import GRADES, Record
from pcs.record.closure import Session
from pcs.record.code import read_sources_dir
from pcs.record.determinism import seeded
from pcs.record.environ import recorded_environ
from pcs.record.reads import data_for_rerun
from pcs.record.script import protect_argv
from pcs.record.staging import watch_loading
from pcs.registry import InMemoryRegistry
from pcs.repo import GitRepo, LocalRepo
from pcs.run import Run, _pop_active, _push_active, active_runs, keep_verification
from pcs.run import _flatten as _flatten_spec
from pcs.run_command import RunCommand
from pcs.specs import content_hash, dump_yaml, sha256_bytes, to_recordable

if TYPE_CHECKING:  # pragma: no cover
    from pcs.component import Component

__all__ = ["ComponentRun", "active_component_run", "GRADES", "argument_params"]

log = logging.getLogger(__name__)

_UNSET = object()
# MLflow's limit on a param value; longer arguments are logged as a pointer
_PARAM_VALUE_LIMIT = 6000
_ERROR_TAG_LIMIT = 1000


def active_component_run(managed_object: Any = None) -> ComponentRun | None:
    """The ComponentRun executing ``managed_object`` (default: the innermost one).

    Call it inside an entry point as ``active_component_run(self)`` to log to
    the run that is executing the object.
    """
    for run in reversed(active_runs()):
        if isinstance(run, ComponentRun):
            if managed_object is None or run._manages(managed_object):
                return run
    return None


class ComponentRun(Run):
    """A run produced by a ``RunCommand``: it can be rerun and verified."""

    _run_type = _keys.RUN_TYPE_COMPONENT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run_command: RunCommand | None = None
        self._return_value: Any = _UNSET
        self._managed_ids: set[int] = set()
        self._environment: dict[str, Any] | None = None
        self._trusted = False
        self._imports: list[str] | None = None
        self._capture: OutputCapture | None = None
        # the pcs.Verification of a verified rerun (a feature above the core, set by it)
        self.verification: Any = None

    # -- executing a command -----------------------------------------------------------

    @classmethod
    def from_component(
        cls,
        component: Component,
        entry_point: str | None,
        args: ArgumentSet | Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> ComponentRun:
        """Record and execute ``entry_point`` of ``component`` with ``args`` as a new run."""
        command = RunCommand.create(
            component, component.resolve_entry_point(entry_point), ArgumentSet.coerce(args), seed=seed
        )
        return cls.execute(command, **kwargs)

    @classmethod
    def execute(
        cls,
        command: RunCommand,
        *,
        outer_run: Run | None = None,
        rerun_of: Run | None = None,
        run_name: str | None = None,
        experiment_id: str | None = None,
        return_value_format: str = "auto",
        tags: dict[str, str] | None = None,
    ) -> ComponentRun:
        """Record ``command`` as a new run, execute it, record its return value.

        Everything that can fail on bad input (the component's files, the entry
        point, argument names) is checked before the run exists; a run whose
        code raises ends FAILED with the error recorded (tag ``pcs.error``,
        artifact ``pcs/traceback.txt``) and the exception propagates.
        """
        if return_value_format not in ("auto", "yaml", "json", "dill", "pickle"):
            raise ArgumentError(
                f"return_value_format {return_value_format!r} is not one of auto, yaml, "
                "json, dill, pickle."
            )
        component = command.component
        session, targets = command.take_session()
        try:
            with session:
                if targets is None:
                    with seeded(command.seed), watch_loading(session) as command._loaded:
                        targets = component._load_targets_in(session)  # as RunCommand.create
                    command.scan(session)
                component.check_entry_point(command.entry_point, targets[component.identifier])
                component.check_arguments(command.argument_set, command.entry_point, targets)
                params = argument_params(command)
                record = Record.start(command._facts())
                counted = _signals.enter()
                outcome: BaseException | None = None
                try:
                    run = cls._start(command, record, params, outer_run, rerun_of, run_name,
                                     experiment_id, tags)
                    value = run._call_entry_point(command, targets, record, session)
                    run._finish(value, return_value_format, record, session)
                except BaseException as exc:
                    outcome = exc
                    raise
                finally:
                    # before leave(): a signal delivered again there ends the process; a
                    # signal that lands in the cleanup itself is what leave() is told
                    try:
                        record.cleanup()
                    except BaseException as exc:
                        outcome = exc
                        raise
                    finally:
                        _signals.leave(counted, outcome)
        finally:
            session.close()
        return run

    @classmethod
    def _start(cls, command: RunCommand, record: Record, params: dict[str, str],
               outer_run: Run | None, rerun_of: Run | None, run_name: str | None,
               experiment_id: str | None, extra_tags: dict[str, str] | None) -> ComponentRun:
        tags = dict(record.tags)
        tags.update(extra_tags or {})
        if rerun_of is not None:
            tags[_keys.RERUN_OF] = rerun_of.identifier
        # the description is written with the run (a description given by the caller is kept)
        tags.setdefault(_keys.NOTE, _description(command))
        run = cls(experiment_id=experiment_id, run_name=run_name, tags=tags, outer_run=outer_run)
        run._run_command = command
        try:
            run._log_params_unchecked(params)
            run._log_staged(record.folder)
        except BaseException as exc:
            run._end_with_error(exc)
            raise
        return run

    def _log_params_unchecked(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes 100 params per batch
            self._client.log_batch(self._run_id, params=items[i : i + 100])
        self._changed()

    def _call_entry_point(
        self, command: RunCommand, targets: dict[str, Any], record: Record, session: Session,
    ) -> Any:
        component = command.component
        capture = self._capture = OutputCapture()
        _push_active(self)
        try:
            with record.watching({t.key: t.root for t in session.trees if t.root is not None}), capture:
                objects = component._build_objects(command.argument_set, targets)
                self._managed_ids = {id(o) for o in objects.values()}
                entry = getattr(objects[component.identifier], command.entry_point)
                kwargs = command.argument_set.get_function_args(component.name, command.entry_point)
                return call_entry_point(entry, kwargs)
        except BaseException as exc:
            # the credentials the error quotes are learned before the record of what the run
            # read is written, so an environment variable that held one keeps only its hash
            redact_text(str(exc))
            end, tags = self._end_files(command, record, session)
            self._end_with_error(exc, end, tags)
            _note_run(exc, self.identifier)
            raise
        finally:
            _pop_active(self)

    def _end_files(
        self, command: RunCommand, record: Record, session: Session
    ) -> tuple[Path, dict[str, str]]:
        """Stage what the end of a run records (output, then the record's end); its tags."""
        end = record.end_folder()
        tags: dict[str, str] = {}
        try:
            if self._capture is not None:
                tags.update(self._capture.write_files(end))
            grew = command.absorb(session)
            record.end(end, command._facts(), grew, tags)
        except Exception as exc:  # noqa: BLE001 - the run must still end; say what is missing
            log.warning("pcs: could not stage the end of run %s: %s", self.identifier, exc)
        if record.imports is not None:
            self._imports = record.imports
        return end, tags

    def _end_with_error(
        self, exc: BaseException, end: Path | None = None, end_tags: dict[str, str] | None = None
    ) -> None:
        """End the run FAILED (KILLED for Ctrl-C and signals) with what went wrong recorded.

        Args:
            exc: what ended it.
            end: a folder of end-of-run files to upload with the traceback.
            end_tags: tags to set with the error.
        """
        killed = isinstance(exc, (KeyboardInterrupt, _signals.ProcessTerminated))
        try:
            tags = dict(end_tags or {})
            with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-traceback-") as tmp:
                folder = end if end is not None else Path(tmp)
                if not killed:
                    tags[_keys.ERROR] = _one_line(exc)
                    (folder / Path(_keys.TRACEBACK_ARTIFACT).name).write_text(
                        redact_text(
                            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                        ),
                        encoding="utf-8",
                    )
                if any(folder.iterdir()):
                    self._log_staged(folder, _keys.PCS_ARTIFACT_DIR)
            if tags:
                self.set_tags(tags)
        except Exception as write_error:  # noqa: BLE001 - the run must still end FAILED
            log.warning("pcs: could not record the error of run %s: %s", self.identifier, write_error)
        if killed:
            reason = exc.signal_name if isinstance(exc, _signals.ProcessTerminated) else "SIGINT"
            self._record_end_reason(reason)
            self.end("KILLED")
            return
        self.end("FAILED")

    def _finish(self, value: Any, fmt: str, record: Record, session: Session) -> None:
        command = self.run_command
        try:
            end, tags = self._end_files(command, record, session)
            path, used_fmt, digest = _write_return_value(value, fmt, end)
            if path is not None:
                tags[_keys.RETURN_VALUE_SHA256] = digest
            else:
                tags.update(record.lower_grade(digest or (
                    f"the return value ({type(value).__name__}) cannot be recorded as YAML/JSON; "
                    "pass return_value_format='dill' to record it"
                )))
            tags[_keys.RETURN_VALUE_FORMAT] = used_fmt
            tags.update(_returned_file_tags(value))
            self._log_staged(end, _keys.PCS_ARTIFACT_DIR)
            self.set_tags(tags)
        except BaseException as exc:
            self._end_with_error(exc)
            raise
        self._return_value = value
        self.end("FINISHED")

    def _manages(self, obj: Any) -> bool:
        return id(obj) in self._managed_ids

    # -- what was recorded ------------------------------------------------------------

    @property
    def run_command(self) -> RunCommand:
        """The RunCommand that produced this run, loaded from its own artifact."""
        if self._run_command is None:
            with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-read-") as tmp:
                try:
                    path = self._download_quietly(_keys.RUN_COMMAND_ARTIFACT, Path(tmp))
                except Exception as exc:  # noqa: BLE001 - any store error means "not there"
                    raise NotReproducibleError(
                        f"Run {self.identifier} is tagged as a component run but its "
                        f"{_keys.RUN_COMMAND_ARTIFACT} cannot be read ({exc}). The record is "
                        "incomplete (the run may have been created outside pcs)."
                    ) from None
                registry = InMemoryRegistry(
                    load_yaml(path.read_text(encoding="utf-8"), f"{_keys.RUN_COMMAND_ARTIFACT} of run {self.identifier}", NotReproducibleError)
                )
            command_id = self.tags.get(_keys.RUN_COMMAND_ID)
            if not command_id:
                raise NotReproducibleError(
                    f"Run {self.identifier} has no {_keys.RUN_COMMAND_ID} tag."
                )
            self._run_command = RunCommand.from_registry(registry, command_id)
        return self._run_command

    @property
    def seed(self) -> int:
        """The seed given to ``random`` (and NumPy / PyTorch) before the entry point ran."""
        if self._run_command is not None:
            return self._run_command.seed
        return int(self.tags[_keys.SEED])

    @property
    def entry_point(self) -> str | None:
        return self.tags.get(_keys.ENTRY_POINT)

    @property
    def grade(self) -> str:
        """``portable``, ``local`` or ``not-rerunnable``, decided when the run started."""
        return self.tags.get(_keys.GRADE, "unknown")

    @property
    def grade_reasons(self) -> list[str]:
        raw = self.tags.get(_keys.GRADE_REASONS, "[]")
        try:
            return list(json.loads(raw))
        except (ValueError, TypeError, RecursionError):
            return [raw]

    @property
    def environment(self) -> dict[str, Any]:
        """What the run ran on: ``pcs/environment.yaml`` (recorded at start), updated with
        ``pcs/environment_used.yaml`` (the distributions it used, recorded at the end)."""
        if self._environment is None:
            start = self._read_yaml(_keys.ENVIRONMENT_ARTIFACT) or {}
            end = self._read_yaml(_keys.ENVIRONMENT_USED_ARTIFACT) or {}
            self._environment = {**start, **end} if isinstance(end, dict) else start
        return self._environment

    @property
    def code_record(self) -> dict[str, Any]:
        """The recorded ``pcs/code.yaml``: source files, their hashes and git state."""
        return self._read_yaml(_keys.CODE_ARTIFACT) or {}

    def _read_yaml(self, artifact: str) -> Any:
        with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-read-") as tmp:
            try:
                path = self._download_quietly(artifact, Path(tmp))
            except Exception:  # noqa: BLE001 - missing artifact
                return None
            return load_yaml(path.read_text(encoding="utf-8"), f"{artifact} of run {self.identifier}", NotReproducibleError)

    def return_value_of(self, trust: bool = False) -> Any:
        """The entry point's return value, loaded from the store if not in memory.

        Args:
            trust: allow unpickling a pickled return value (only for runs you trust:
                unpickling runs code).
        """
        if self._return_value is not _UNSET:
            return self._return_value
        fmt = self.tags.get(_keys.RETURN_VALUE_FORMAT)
        if fmt in (None, "none"):
            raise NotReproducibleError(
                f"Run {self.identifier} has no recorded return value"
                + (" (it is still running or failed)." if fmt is None else ".")
            )
        artifact = f"{_keys.RETURN_VALUE_STEM}.{_EXT.get(fmt, fmt)}"
        with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-read-") as tmp:
            try:
                path = self._download_quietly(artifact, Path(tmp))
            except Exception:  # noqa: BLE001 - MLflow raises several kinds for "not there"
                raise NotReproducibleError(
                    f"Run {self.identifier} records a return value, but its artifact {artifact} "
                    "cannot be read (was the run exported without artifacts?). Rerun it to "
                    "compute the value again."
                ) from None
            data = path.read_bytes()
        if fmt in ("dill", "pickle"):
            if not (trust or self._trusted) and self.tags.get(_keys.IMPORTED_FROM):
                raise NotReproducibleError(
                    f"Run {self.identifier} was imported from a bundle and its return value is "
                    "pickled; unpickling runs code. Call run.return_value_of(trust=True) if you "
                    "trust where the bundle came from."
                )
            import dill

            value = dill.loads(data)
        elif fmt == "json":
            value = load_json(data, f"the return value of run {self.identifier}", NotReproducibleError)
        else:
            value = load_yaml(data, f"the return value of run {self.identifier}", NotReproducibleError)
        self._return_value = value
        return value

    @property
    def return_value(self) -> Any:
        """The entry point's return value (loaded from the store when needed)."""
        return self.return_value_of()

    def to_spec(self, flatten: bool = False) -> dict[str, Any]:
        """The run's spec (info, data) with its run command's identifier, as in AgentOS.

        The run command's own spec is ``run.run_command.to_spec()``; see ``Run.to_spec``.
        """
        spec = super().to_spec()
        spec["run_command"] = self.run_command.identifier
        return _flatten_spec(spec) if flatten else spec

    # -- reproduction ---------------------------------------------------------------------

    def recorded_sources(self) -> dict[str, str]:
        """The source snapshot recorded at run start, by sha256."""
        with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-sources-") as tmp:
            # pcs/code/<path>; runs recorded before it kept pcs/source/<sha256>.py
            for where in (_keys.CODE_FILES_DIR, _keys.SOURCE_ARTIFACT_DIR):
                try:
                    folder = self._download_quietly(where, Path(tmp) / Path(where).name)
                except Exception:  # noqa: BLE001 - not recorded in this layout
                    continue
                sources = read_sources_dir(folder)
                if sources:
                    return sources
            return {}

    @property
    def imported_modules(self) -> list[str]:
        """Top-level names of the modules outside the standard library that the run's code imports.

        Found while the components loaded and the entry point ran (imports of
        modules already loaded by someone else are seen only when written as
        literal import statements). Read from ``pcs/imports.yaml``; an older run
        without it gives an empty list.
        """
        if self._imports is None:
            data = self._read_yaml(_keys.IMPORTS_ARTIFACT)
            modules = data.get("modules") if isinstance(data, dict) else None
            self._imports = [str(m) for m in modules] if isinstance(modules, list) else []
        return list(self._imports)

    def rerun(
        self,
        verify: bool = False,
        strict: bool = False,
        code: str = "recorded",
        env: str = "current",
        run_name: str | None = None,
        rtol: float = 0.0,
        atol: float = 0.0,
        ignore: tuple[str, ...] | list[str] = (),
        progress: ProgressCallback | None = None,
        env_vars: str = "recorded",
        trust: bool = False,
        args: Any = None,
    ) -> ComponentRun:
        """Execute the recorded command again as a new run, tagged ``pcs.rerun_of`` and named
        after the original with `` (rerun)`` (unless ``run_name`` is given).

        With ``args``, the recorded code runs with changed arguments instead: a
        new run tagged ``pcs.derived_from`` (not a rerun, so no verdict; ``pcs
        diff`` shows what changed). For a script, ``args`` are strings appended
        to the recorded argv (argparse and click keep an option's last value);
        for a component, an ArgumentSet (or dict of that shape) merged over the
        recorded one.

        Args:
            verify: compare the new run with this one; the report is
                ``new_run.verification`` (its verdict is also tagged on the new run).
            strict: raise ``ReproducibilityError`` when the verified rerun diverges
                (``UnverifiableError`` when nothing could be compared).
            code: ``"recorded"`` runs the snapshot taken when this run started
                (components and the modules they imported from their repos),
                without reaching any git remote; ``"current"`` runs the component
                files as they are now; ``"git"`` runs the recorded commit of every
                component, read from its git repo (a local folder's recorded
                remote), and fails when a repo cannot be reached.
            env: ``"current"`` runs in this process; ``"recorded"`` runs in a
                virtual environment with the recorded distributions' versions.
            rtol, atol: tolerance for comparing metric values (``math.isclose``).
            ignore: metric or param names (glob patterns) not to compare.
            progress: hears of the rebuilt environment's progress (``env="recorded"``).
            env_vars: ``"recorded"`` sets the environment variables the run read to the
                values it read while the rerun runs (secrets, recorded as a hash, keep
                their current value); ``"current"`` leaves the environment as it is.
            trust: with ``verify``, unpickle this run's pickled return value to compare
                it when the run was imported (unpickling runs code: only for bundles
                you trust); without it such a value is reported as not compared.
        """
        if env_vars not in ("recorded", "current"):
            raise ArgumentError(f"env_vars must be 'recorded' or 'current'; got {env_vars!r}.")
        if code not in ("recorded", "current", "git"):
            raise ArgumentError(f"code must be 'recorded', 'current' or 'git'; got {code!r}.")
        if env not in ("current", "recorded"):
            raise ArgumentError(f"env must be 'current' or 'recorded'; got {env!r}.")
        if args is not None:
            return self._derive(args, verify or strict, code, env, run_name)
        if self.grade == "not-rerunnable":
            raise NotReproducibleError(
                f"Run {self.identifier} was graded not-rerunnable when it was recorded: "
                + "; ".join(self.grade_reasons)
            )
        if run_name is None and self.info.run_name:
            run_name = f"{self.info.run_name} (rerun)"  # found next to the original in the UI
        inputs = self._read_yaml(_keys.INPUTS_ARTIFACT) if env_vars == "recorded" else None
        values = (inputs.get("env") or {}) if isinstance(inputs, dict) else {}
        with recorded_environ(values if isinstance(values, dict) else {}):
            if env == "recorded":
                new = feature("rerun_in_recorded_env")(
                    self, code=code, run_name=run_name, progress=progress
                )
            else:
                new = self.command_for_rerun(code).run(
                    rerun_of=self,
                    run_name=run_name,
                    experiment_id=self.experiment_id,
                    return_value_format=self._recorded_format(),
                )
        if verify or strict:
            report = feature("compare_runs")(
                self, new, rtol=rtol, atol=atol, ignore=ignore, trust=trust
            )
            keep_verification(new, report, strict)
        return new

    def _derive(self, args: Any, verify: bool, code: str, env: str, run_name: str | None) -> ComponentRun:
        """The recorded code run with changed arguments, as a new run tagged ``pcs.derived_from``."""
        if verify:
            raise ArgumentError(
                f"A run with changed arguments is not a rerun of {self.identifier}, so it has no "
                "verdict against it. Drop verify (--verify), and compare the two runs with "
                "pcs diff (compare_runs) to see what the change did."
            )
        if env != "current":
            raise ArgumentError(
                "Changed arguments run in this environment only (env='current'); rerun "
                "with env='recorded' reproduces the recorded arguments."
            )
        if self.grade == "not-rerunnable":
            raise NotReproducibleError(
                f"Run {self.identifier} was graded not-rerunnable when it was recorded: "
                + "; ".join(self.grade_reasons)
            )
        command = self.command_for_rerun(code)
        command.use_argument_set(_changed_arguments(command, args))
        return ComponentRun.execute(
            command,
            run_name=run_name,
            experiment_id=self.experiment_id,
            return_value_format=self._recorded_format(),
            tags={_keys.DERIVED_FROM: self.identifier},
        )

    def command_for_rerun(self, code: str = "recorded") -> RunCommand:
        """A fresh copy of the recorded command, over the recorded snapshot, current files or git commits.

        Args:
            code: ``"recorded"``, ``"current"`` or ``"git"`` (see :meth:`rerun`).
        """
        # a fresh copy: the run's own command may share Component objects with the caller,
        # which must keep running their current code after this rerun
        command = self.run_command.copy()
        components = command.component.dependency_list()
        if code == "recorded":
            command.use_sources(self._sources_for(command))
            self._use_recorded_requirements(command)
            self._use_recorded_data(command, code)
            if any(isinstance(c.repo, GitRepo) for c in components):
                command.recorded_code = self.code_record  # its git state, so no remote is asked
            return command
        self._use_recorded_data(command, code)
        record = self.code_record.get("components") or {}
        if code == "git":
            return _pin_to_recorded_commits(command, record, self.identifier)
        for c in components:
            where = (record.get(c.identifier) or {}).get("local_dir")
            if isinstance(c.repo, LocalRepo) and isinstance(where, str) and Path(where).is_dir():
                c.repo = LocalRepo(c.repo.identifier, where)  # where the files were
        return command.with_current_code()

    def _recorded_format(self) -> str:
        fmt = self.tags.get(_keys.RETURN_VALUE_FORMAT)
        return fmt if fmt in _EXT else "auto"

    def _use_recorded_requirements(self, command: RunCommand) -> None:
        """Components read their recorded requirements file, not the (maybe absent) repo's."""
        wanted = [c for c in command.component.dependency_list() if c.requirements_path]
        if not wanted:
            return
        with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-requirements-") as tmp:
            try:
                folder = self._download_quietly(_keys.REQUIREMENTS_DIR, Path(tmp))
            except Exception:  # noqa: BLE001 - none recorded
                return
            for c in wanted:
                recorded = folder / f"{c.name}.txt"
                if recorded.is_file():
                    c._requirements_override = recorded.read_text(encoding="utf-8")

    def _use_recorded_data(self, command: RunCommand, code: str) -> None:
        """Components of a rerun of recorded code get the data files the run read next to
        its code; any rerun is refused when one of them is gone (see ``data_for_rerun``)."""
        inputs = self._read_yaml(_keys.INPUTS_ARTIFACT)
        if not isinstance(inputs, dict) or not inputs.get("data"):
            return
        wanted = {
            str(e.get("sha256")) for files in inputs["data"].values() if isinstance(files, dict)
            for e in files.values() if isinstance(e, dict) and e.get("snapshot")
        }
        snapshots: dict[str, bytes] = {}
        if wanted and code == "recorded":
            with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-data-") as tmp:
                try:
                    folder = self._download_quietly(_keys.DATA_SNAPSHOT_DIR, Path(tmp))
                except Exception:  # noqa: BLE001 - none kept: the live files are looked for
                    folder = None
                for digest in wanted:
                    kept = folder / digest if folder is not None else None
                    if kept is not None and kept.is_file():
                        blob = kept.read_bytes()
                        if sha256_bytes(blob) == digest:
                            snapshots[digest] = blob
        record = self.code_record
        placed = data_for_rerun(self.identifier, inputs, record, snapshots, code)
        for component in command.component.dependency_list():
            component._recorded_data = placed.get(component.identifier, {})
            where = ((record.get("components") or {}).get(component.identifier) or {}).get("local_dir")
            if code == "recorded" and isinstance(where, str) and Path(where).is_dir():
                # code that reads relative to the working folder still reads the files there
                component._recorded_data_root = Path(where)

    def _sources_for(self, command: RunCommand) -> dict[str, str]:
        sources = self.recorded_sources()
        for component in command.component.dependency_list():
            if not isinstance(component.repo, GitRepo):
                continue
            # no snapshot artifact (e.g. an export without artifacts): the pinned commit
            entry = command.code.get(component.identifier, {})
            digest = entry.get("sha256")
            if digest and digest not in sources:
                text = component.source()
                if sha256_bytes(text.encode("utf-8")) == digest:
                    sources[digest] = text
            for module in command.closure_entries(component.identifier).values():
                digest = module.get("sha256")
                if digest and digest not in sources:
                    try:
                        text = component.repo.read_source(str(module["path"]), component.version)
                    except PcsError:
                        continue  # use_sources says which snapshot is missing
                    if sha256_bytes(text.encode("utf-8")) == digest:
                        sources[digest] = text
        return sources


def _changed_arguments(command: RunCommand, args: Any) -> ArgumentSet:
    """The recorded arguments of ``command`` with ``args`` applied (see ``ComponentRun.rerun``)."""
    component = command.component
    if component.is_script:
        if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)) or not all(
            isinstance(a, str) for a in args
        ):
            raise ArgumentError(
                f"Run of script {component.name!r}: args are the strings to add to its recorded "
                f"argv, e.g. ['--lr', '0.2']; got {args!r:.200}."
            )
        recorded = command.argument_set.get_function_args(component.name, command.entry_point)
        argv = protect_argv([*recorded.get("argv", []), *args])  # a --token given here is hashed too
        return ArgumentSet({component.name: {command.entry_point: {"argv": argv}}})
    if isinstance(args, (list, tuple)):
        raise ArgumentError(
            f"Component {component.name!r} takes arguments as an ArgumentSet (or a dict "
            "{component: {function: {arg: value}}}), not a list: only a script run takes argv."
        )
    return command.argument_set.merged(ArgumentSet.coerce(args))


def _pin_to_recorded_commits(command: RunCommand, record: dict[str, Any], run_id: str) -> RunCommand:
    """``command`` over the recorded git commit of every component (``code="git"``)."""
    repos: dict[str, GitRepo] = {}
    missing: list[str] = []
    for c in command.component.dependency_list():
        git = (record.get(c.identifier) or {}).get("git") or {}
        commit = git.get("commit")
        if isinstance(c.repo, GitRepo) and c.file_path:
            c._use_git_commit(c.repo, c.file_path, str(commit or c.version or "HEAD"),
                              c.requirements_path)
            continue
        files = git.get("files") or []
        url = git.get("remote_url")
        if not (isinstance(c.repo, LocalRepo) and c.file_path and commit and url and files):
            missing.append(c.identifier)
            continue
        repo = repos.get(url)
        if repo is None:
            repo = repos[url] = GitRepo.for_url(url)
        in_git = str(files[0])  # the component's file, relative to the work tree's root
        requirements = c.requirements_path
        if requirements:
            # relative to the component's folder in git, as it was to its local repo folder
            folder = posixpath.dirname(in_git)
            depth = len(PurePosixPath(c.file_path.replace("\\", "/")).parent.parts)
            for _ in range(depth):
                folder = posixpath.dirname(folder)
            requirements = posixpath.normpath(posixpath.join(folder, requirements))
        c._use_git_commit(repo, in_git, str(commit), requirements)
    if missing:
        raise NotReproducibleError(
            f"Run {run_id} cannot be rerun with code='git': component(s) {', '.join(missing)} "
            "were not in a git repository with a remote when it was recorded, so no commit "
            "of theirs can be checked out. Rerun with code='recorded' (the snapshot) or "
            "code='current'."
        )
    return RunCommand.create(command.component, command.entry_point, command.argument_set, command.seed)


_EXT = {"yaml": "yaml", "json": "json", "dill": "pkl", "pickle": "pkl"}


def _returned_file_tags(value: Any) -> dict[str, str]:
    """When the return value names a file, its path and (inside the run's folder) its sha256.

    The file may be overwritten by a later run in the same folder, so its hash
    is taken now, for verification to compare.
    """
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        return {}
    text = os.fspath(value)
    if not text or len(text) > 4096 or "\n" in text:
        return {}
    try:
        path = Path(text)
        if not path.is_file():
            return {}
        resolved, here = path.resolve(), Path.cwd().resolve()
        if not resolved.is_relative_to(here):
            return {_keys.RETURNED_FILE: str(resolved)}
        digest = hashlib.sha256()
        with resolved.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except (OSError, ValueError):
        return {}
    return {
        _keys.RETURNED_FILE: resolved.relative_to(here).as_posix(),
        _keys.RETURNED_FILE_SHA256: digest.hexdigest(),
    }


def _write_return_value(value: Any, fmt: str, folder: Path) -> tuple[Path | None, str, str]:
    """Write the return value in ``fmt``; return (path, format used, sha256), or (None, "none", why).

    A YAML/JSON text larger than pcs reads back (``MAX_YAML_BYTES``) is never
    written: with ``auto`` the value is not recorded (the reason lowers the
    grade); asked for ``yaml``/``json`` explicitly, it is an ``InputLimitError``.
    """
    if fmt in ("auto", "yaml", "json"):
        try:
            data = to_recordable(_numpy_as_plain(value), "the return value")
        except ArgumentError:
            if fmt != "auto":
                raise
            log.warning(
                "pcs: the return value (%s) cannot be recorded as YAML/JSON; pass "
                "return_value_format='dill' (pcs run --return-value-format dill) to record it.",
                type(value).__name__,
            )
            return None, "none", ""
        used = "json" if fmt == "json" else "yaml"
        path = folder / f"return_value.{_EXT[used]}"
        text = (
            json.dumps(data, sort_keys=True, indent=1)
            if used == "json"
            else dump_yaml(data, sort_keys=True)
        )
        size = len(text.encode("utf-8"))
        if size > MAX_YAML_BYTES:
            why = (
                f"the return value is {size} bytes as {used.upper()}, more than the "
                f"{MAX_YAML_BYTES} bytes pcs reads back from one document, so it is not "
                "recorded; return a smaller value (keep large data in artifacts) or pass "
                "return_value_format='dill'"
            )
            if fmt != "auto":
                raise InputLimitError(
                    f"The return value is {size} bytes as {used.upper()}, more than the "
                    f"{MAX_YAML_BYTES} bytes pcs reads back from one document, so the run "
                    "cannot record it as asked. Return a smaller value (keep large data in "
                    "artifacts), or use return_value_format='auto' (not recorded) or 'dill'."
                )
            log.warning("pcs: %s.", why)
            return None, "none", why
        path.write_text(text, encoding="utf-8")
        return path, used, content_hash(data)
    import dill

    blob = dill.dumps(value)
    path = folder / "return_value.pkl"
    path.write_bytes(blob)
    return path, fmt, sha256_bytes(blob)


def _numpy_as_plain(value: Any, depth: int = 0) -> Any:
    """NumPy scalars and arrays (also inside lists and dicts) as the Python numbers and lists they hold.

    A result like ``{"sum": np.int64(10)}`` is then recorded, and compared, like
    ``{"sum": 10}``. Too deep a value is left as it is (``to_recordable`` says so).
    """
    if depth > MAX_DEPTH:
        return value
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _numpy_as_plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numpy_as_plain(v, depth + 1) for v in value]
    return value


def argument_params(command: RunCommand) -> dict[str, str]:
    """The MLflow params of a component run: every argument as ``COMPONENT.FUNCTION.ARG``, and the seed.

    Values are short YAML (``5``, ``'5'``, ``[1, 2]``); a value longer than
    MLflow keeps is logged as ``sha256:<hex>`` of its canonical form (the
    value itself stays in the run command).
    """
    params: dict[str, str] = {_keys.SEED_PARAM: str(command.seed)}
    if command.component.is_script:
        # a script's params are what it parses (logged as it parses them); its argv is one param
        argv = command.argument_set.get_function_args(command.component.name, command.entry_point)
        text = json.dumps(list(argv.get("argv", [])))
        params[_keys.ARGV_PARAM] = text if len(text) <= _PARAM_VALUE_LIMIT else f"sha256:{content_hash(text)}"
        return params
    for comp, functions in command.argument_set.to_dict().items():
        for function, kwargs in functions.items():
            for name, value in kwargs.items():
                key = f"{comp}.{function}.{name}"
                if not _is_param_key(key):
                    continue  # MLflow refuses this name; the run command still holds the value
                text = redact_text(_short_yaml(value))
                if len(text) > _PARAM_VALUE_LIMIT:
                    text = f"sha256:{content_hash(value)}"
                params[key] = text
    return params


def _short_yaml(value: Any) -> str:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump(value, Dumper=dumper, default_flow_style=True, sort_keys=True, width=2**31 - 1)
    text = text.strip()
    if text.endswith("\n..."):  # a plain scalar document ends with an explicit end marker
        text = text[: -len("\n...")]
    return text


def _is_param_key(key: str) -> bool:
    return 0 < len(key) <= 250 and all(c.isalnum() or c in "_-. /" for c in key)


def _one_line(exc: BaseException) -> str:
    message = redact_text(" ".join(str(exc).split()))
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= _ERROR_TAG_LIMIT else text[: _ERROR_TAG_LIMIT - 3] + "..."


def _description(command: RunCommand) -> str:
    """The run's description in MLflow's UI: what ran, and how to rerun it (Markdown).

    It is written with the run, before MLflow has given the run its id, so it
    names the id by its place (MLflow's UI shows it next to the description).
    """
    component = getattr(command.component, "identifier", "?")
    arguments = sum(
        len(command.argument_set.get_function_args(c, f))
        for c, fns in command.argument_set.to_dict().items() for f in fns
    )
    return (
        f"Recorded by pcs: `{component}.{command.entry_point}` with {arguments} "
        f"argument{'s' if arguments != 1 else ''} (params), seed {command.seed}, and the "
        f"code snapshot under `pcs/` in the artifacts.\n\n"
        "Run it again and check it reproduces: `pcs rerun <this run's ID> --verify`"
    )


def _note_run(exc: BaseException, run_id: str) -> None:
    """Tell whoever catches ``exc`` which run it failed (the CLI prints it)."""
    try:
        exc.pcs_run_id = run_id  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
