"""A plain Python script as a component: run as ``__main__``, its parsed arguments recorded.

A script component (``Component.from_script``, ``pcs run train.py ARGS``)
manages a :class:`ScriptTarget` instead of a module or class. Its one entry
point, ``run(argv)``, executes the script's source (the file as it is on a
first run, the recorded snapshot on a rerun) the way ``python train.py ARGS``
would: in a fresh module named ``__main__`` with ``__file__`` set, ``sys.argv``
set to the script's path and ``argv``, and the script's folder first on
``sys.path``. The script's own imports of files next to it are served by the
closure session the run is in (see :mod:`pcs.record.closure`), so they are
snapshotted and pinned like a component's.

While the script runs, what it parses is recorded as MLflow params of the run
under the script's own names (``lr``, ``epochs``), defaults included:

- ``argparse``: every ``ArgumentParser.parse_args`` / ``parse_known_args``
  (and the intermixed variants), outermost call only (sub-parsers fill the
  same namespace);
- ``click``: the parameters of every command invoked (``ctx.params``);
- Hydra: the composed config of every job the script's ``@hydra.main`` runs,
  flattened to dotted names (``model.depth``), interpolations resolved. The
  config folders Hydra searched (``config_path``) are added to the run's data
  reads whole, not only the files this run composed, so they are kept with the
  record (up to the data snapshot limit): a rerun of the recorded code
  composes the recorded config, a derived run may pick another config group,
  and a config edited since the run is named as a changed data file.

``mlflow.start_run()`` without ``nested=True`` (and without another run id)
inside the script returns the pcs run itself, and ``mlflow.end_run()`` leaves
it running: the script's MLflow calls land in the run pcs records, which pcs
ends when the script ends. ``sys.exit(0)``, ``sys.exit()`` and falling off the
end finish the run; a non-zero exit is :class:`~pcs.errors.ScriptExitError`,
which fails it.

Secret values on the command line (``--token X``, ``--password=X``, any
option whose name :func:`pcs.secrets.is_secret_name` calls secret, and any
``pcs.secret(...)`` in a Python argv) are recorded as ``pcs-secret:<hash>``
markers, as secret component arguments are (:func:`protect_argv`): in the run
command, the argv param and the params the script parses. The script itself
gets the clear value; a rerun asks for it again as for a component's secret
(``--secret-arg``, ``PCS_SECRET_<NAME>``; :func:`reveal_argv`).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import sys
import traceback
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from pcs._disk import disk_full_error
from pcs.errors import ArgumentError, ScriptExitError
from pcs.record.closure import compiled
from pcs.specs import sha256_bytes

__all__ = [
    "SCRIPT_CLASS_NAME", "SCRIPT_ENTRY_POINT", "ScriptTarget", "flat_config", "param_text", "protect_argv",
    "reveal_argv", "argv_secrets",
]

log = logging.getLogger(__name__)

#: the ``class_name`` of a script component: its source runs as ``__main__``
SCRIPT_CLASS_NAME = "__main__"
#: the one entry point of a script component
SCRIPT_ENTRY_POINT = "run"

_PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param value


class ScriptTarget:
    """What a script component manages: its source, ready to run as ``__main__``.

    Args:
        source: the script's text (hashed into the run command).
        path: the file on disk it runs as (``__file__``): the live file, or
            the materialised snapshot on a rerun.
        file_path: the script's path inside its repo (posix); a script inside
            a package folder (``-m pkg.mod``) runs with ``__package__`` set.
        label: a readable name for messages.
    """

    def __init__(self, source: str, path: Path | None, file_path: str, label: str) -> None:
        self.source = source
        self.path = path
        self.file_path = file_path
        self.label = label

    def run(self, argv: Sequence[str] = ()) -> None:
        """Execute the script as ``__main__`` with ``sys.argv[1:] == argv``.

        Returns None when the script ends normally or exits with code 0.

        Raises:
            ScriptExitError: the script exited with a non-zero code.
            BaseException: whatever the script raised (after printing its traceback
                on stderr, as Python would).
        """
        argv, secrets = reveal_argv(check_argv(argv), PurePosixPath(self.file_path).stem or "script")
        filename = str(self.path) if self.path is not None else self.label
        code = compiled(self.source, filename, sha256_bytes(self.source.encode("utf-8")))
        module = types.ModuleType("__main__")
        module.__dict__.update({
            "__file__": filename,
            "__builtins__": builtins,
            "__package__": _package_of(self.file_path),
            "__spec__": None,
            "__loader__": None,
            "__cached__": None,
        })
        folder = str(self.path.parent) if self.path is not None else None
        if folder is not None and _package_of(self.file_path):
            # python -m puts the folder holding the top-level package first, not the package's
            folder = str(self.path.parents[len(PurePosixPath(self.file_path).parts) - 1])  # type: ignore[union-attr]
        old_main = sys.modules.get("__main__")
        old_argv = sys.argv
        old_path = list(sys.path)
        sys.modules["__main__"] = module
        sys.argv = [filename, *argv]
        if folder is not None:
            sys.path.insert(0, folder)
        sink = _ParamSink(secrets)
        try:
            with _argparse_hook(sink), _click_hook(sink), _hydra_hook(sink, self.source), \
                    _mlflow_shared(sink.run_id):
                try:
                    exec(code, module.__dict__)  # noqa: S102 - running the user's script is the point
                except SystemExit as exc:
                    _exit(exc)
                except Exception as exc:
                    # what python prints for an uncaught exception (from the script's frame on);
                    # a full disk is not the script's fault: pcs says it in one line instead
                    if disk_full_error(exc) is None:
                        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
                        traceback.print_exception(type(exc), exc, tb)
                        # the CLI then need not print the traceback's last lines again
                        with contextlib.suppress(AttributeError, TypeError):
                            exc.pcs_traceback_shown = True  # type: ignore[attr-defined]
                    raise
        finally:
            sys.argv = old_argv
            sys.path[:] = old_path
            if old_main is not None:
                sys.modules["__main__"] = old_main
            else:
                sys.modules.pop("__main__", None)

    def __repr__(self) -> str:
        return f"ScriptTarget({self.label!r})"


def check_argv(argv: Any) -> list[str]:
    """``argv`` as a list of strings, or an ``ArgumentError`` saying what is wrong.

    A ``pcs.secret(...)`` item becomes its ``pcs-secret:`` marker.
    """
    from pcs.secrets import Secret, remember

    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence):
        raise ArgumentError(
            f"A script's arguments are a list of strings (as in sys.argv[1:]); got "
            f"{type(argv).__name__}. Pass e.g. ['--lr', '0.1']."
        )
    argv = [remember(a.value) if isinstance(a, Secret) else a for a in argv]
    bad = [a for a in argv if not isinstance(a, str)]
    if bad:
        raise ArgumentError(
            f"A script's arguments are strings, as on a command line; got {bad[0]!r} "
            f"({type(bad[0]).__name__}). Pass str({bad[0]!r})."
        )
    return list(argv)


def _option_name(arg: str) -> str | None:
    """``token`` for ``--token`` / ``--token=X`` / ``-token``; None for values and ``--``."""
    if not arg.startswith("-") or arg == "--" or len(arg) < 2 or arg[1:2].isdigit():
        return None
    return arg.lstrip("-").partition("=")[0] or None


def protect_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` as recorded: the value of every secret option replaced by its marker.

    A secret option is one whose name looks secret (``--token X``,
    ``--api-key=X``, ``--db_password X``; see :func:`pcs.secrets.is_secret_name`);
    its value is the part after ``=``, else the next item. A Hydra override
    (``db.password=X``, ``+db.password=X``) with such a name is one too. Items that are
    already markers (``pcs.secret`` values, a recorded argv) are kept.

    Example::

        protect_argv(["--lr", "0.1", "--token", "hf_abc"])
        # ['--lr', '0.1', '--token', 'pcs-secret:3b1f...']
    """
    from pcs.secrets import is_marker, is_secret_name, remember

    out = list(check_argv(argv))
    i = 0
    while i < len(out):
        arg = out[i]
        key, equals, value = arg.partition("=")
        if equals and not arg.startswith("-") and is_secret_name(key.lstrip("+~")):
            # a Hydra-style override, db.password=X (or +db.password=X)
            if value and not is_marker(value):
                out[i] = f"{key}={remember(value)}"
            i += 1
            continue
        name = _option_name(arg)
        if name is not None and is_secret_name(name):
            flag, equals, value = arg.partition("=")
            if equals:
                if value and not is_marker(value):
                    out[i] = f"{flag}={remember(value)}"
            elif i + 1 < len(out) and out[i + 1] != "--":
                if out[i + 1] and not is_marker(out[i + 1]):
                    out[i + 1] = remember(out[i + 1])
                i += 1
        i += 1
    return out


def reveal_argv(argv: Sequence[str], script: str) -> tuple[list[str], set[str]]:
    """``argv`` with every secret marker replaced by its clear value, for the script to parse.

    Returns:
        The argv the script gets, and the clear secret values in it.

    Args:
        argv: a recorded argv (see :func:`protect_argv`).
        script: the script's name, for messages (``train``).

    Raises:
        ArgumentError: a secret this process does not hold and ``PCS_SECRET_<NAME>``
            does not give (or gives with another hash): the message says how to pass it.
    """
    from pcs.secrets import reveal

    out = list(argv)
    clear: set[str] = set()
    for i, name, flag, marker in _argv_markers(argv):
        value = reveal(marker, f"{script}.run.{name}", name)
        clear.add(value)
        out[i] = value if flag is None else f"{flag}={value}"
    return out, clear


def argv_secrets(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, marker)`` of every secret in a recorded argv; ``PCS_SECRET_<NAME>`` gives its value.

    Example::

        argv_secrets(["--lr", "0.1", "--token", "pcs-secret:3b1f..."])
        # [('token', 'pcs-secret:3b1f...')]
    """
    return [(name, marker) for _, name, _, marker in _argv_markers(argv)]


def _argv_markers(argv: Sequence[str]) -> Iterator[tuple[int, str, str | None, str]]:
    """``(index, name, flag before '=' or None, marker)`` of each secret marker in ``argv``."""
    from pcs.secrets import is_marker

    for i, arg in enumerate(argv):
        flag, equals, value = arg.partition("=")
        if equals and is_marker(value) and (_option_name(flag) or not flag.startswith("-")):
            yield i, _arg_name(_option_name(flag) or flag.lstrip("+~") or "arg"), flag, value
        elif is_marker(arg):
            before = _option_name(argv[i - 1]) if i > 0 else None
            yield i, _arg_name(before) if before else f"argv{i}", None, arg


def _arg_name(option: str) -> str:
    return option.replace("-", "_").replace(".", "_")


def _package_of(file_path: str) -> str | None:
    parts = PurePosixPath(file_path).parts[:-1]
    return ".".join(parts) if parts else None


def _exit(exc: SystemExit) -> None:
    """Python's handling of ``SystemExit``: None and 0 succeed, text is printed and fails."""
    code = exc.code
    if code is None or code == 0:
        return
    if isinstance(code, int):
        raise ScriptExitError(f"The script exited with code {code}.", code) from None
    print(code, file=sys.stderr)
    raise ScriptExitError(f"The script exited with the message {str(code)[:200]!r}.", 1) from None


def param_text(value: Any) -> str:
    """A parsed value as the text of an MLflow param (as ``mlflow.log_param`` writes it)."""
    if isinstance(value, (list, tuple)):
        text = "[" + ", ".join(str(v) for v in value) + "]"
    else:
        text = str(value)
    if len(text) > _PARAM_VALUE_LIMIT:
        text = "sha256:" + sha256_bytes(text.encode("utf-8"))
    return text


class _ParamSink:
    """Logs parsed arguments as params of the run active when the script started."""

    def __init__(self, secrets: set[str] | frozenset[str] = frozenset()) -> None:
        from mlflow.tracking import fluent

        self.secrets = set(secrets)  # clear values given as secrets: logged as their markers
        entry = fluent.active_run()
        self.run_id: str | None = entry.info.run_id if entry is not None else None
        self._run = getattr(entry, "pcs_run", None)  # the pcs handle, when pcs pushed it
        self.logged: dict[str, str] = {}

    def log(self, values: Mapping[str, Any], where: str) -> None:
        new: dict[str, str] = {}
        for name, value in values.items():
            if not _is_param_key(name) or name.startswith("pcs."):
                continue  # MLflow refuses the name (or pcs owns it); the argv has the value
            text = self._protected(name, value)
            seen = self.logged.get(name)
            if seen is None:
                new[name] = text
            elif seen != text:
                log.warning(
                    "pcs: %s parsed %s=%r, but the run already has %s=%r from an earlier parse; "
                    "MLflow keeps a param's first value, so the run keeps that one.",
                    where, name, text, name, seen,
                )
        if not new or self.run_id is None:
            return
        self.logged.update(new)
        if self._run is not None:
            self._run.log_params(new)
        else:  # pragma: no cover - a script target run outside a pcs run
            from mlflow import MlflowClient

            client = MlflowClient()
            for name, text in new.items():
                client.log_param(self.run_id, name, text)


    def _protected(self, name: str, value: Any) -> str:
        """The param text of a parsed value; a marker when it is a secret (by name or as given)."""
        from pcs.secrets import is_secret_name, remember

        if isinstance(value, str) and value and (value in self.secrets or is_secret_name(name)):
            return remember(value)
        return param_text(value)


def _is_param_key(key: Any) -> bool:
    return isinstance(key, str) and 0 < len(key) <= 250 and all(c.isalnum() or c in "_-. /" for c in key)


# -- hooks ----------------------------------------------------------------------------------------


@contextmanager
def _patched(owner: Any, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextmanager
def _argparse_hook(sink: _ParamSink) -> Iterator[None]:
    """Record what ``argparse`` parses (the outermost call; sub-parsers fill the same namespace)."""
    import argparse

    depth = [0]

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def parse(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0] == 0 and not getattr(self, _NOT_PARAMS, False):
                namespace = result[0] if isinstance(result, tuple) else result
                values = {k: v for k, v in vars(namespace).items() if v is not argparse.SUPPRESS}
                sink.log(values, "argparse")
            return result

        parse.__wrapped__ = original  # type: ignore[attr-defined]
        return parse

    cls = argparse.ArgumentParser
    with _patched(cls, "parse_known_args", wrap), _patched(cls, "parse_known_intermixed_args", wrap):
        yield


@contextmanager
def _click_hook(sink: _ParamSink) -> Iterator[None]:
    """Record the parameters of every click command the script invokes (``ctx.params``)."""
    try:
        import click.core
    except ImportError:  # pragma: no cover - click ships with MLflow
        yield
        return

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def invoke(self: Any, ctx: Any) -> Any:
            sink.log(dict(ctx.params), f"click command {ctx.info_name!r}")
            return original(self, ctx)

        invoke.__wrapped__ = original  # type: ignore[attr-defined]
        return invoke

    with _patched(click.core.Command, "invoke", wrap):
        yield


# set on a parser whose values are not the script's params (Hydra's own command line)
_NOT_PARAMS = "_pcs_not_params"


def _imports_hydra(source: str) -> bool:
    """Whether a script's source imports Hydra (only then is Hydra imported to hook it)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.partition(".")[0] == "hydra" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").partition(".")[0] == "hydra":
            return True
    return False


def flat_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (dicts of dicts) as ``{"model.depth": 3, ...}``; lists stay values."""
    out: dict[str, Any] = {}
    if isinstance(config, Mapping):
        for key, value in config.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping) and value:
                out.update(flat_config(value, f"{name}."))
            else:
                out[name] = value
    return out


@contextmanager
def _hydra_hook(sink: _ParamSink, source: str) -> Iterator[None]:
    """Record each Hydra job's composed config as params, and its config folders as data read.

    Hydra is imported here only when the script imports it itself, so a script
    that does not use Hydra neither loads nor records it.
    """
    if not _imports_hydra(source):
        yield
        return
    try:
        import hydra._internal.hydra as hydra_internal
    except ImportError:  # the script will fail on its own import, with Python's message
        yield
        return
    owners: list[Any] = [hydra_internal]
    try:
        import hydra._internal.core_plugins.basic_launcher as basic_launcher
    except ImportError:  # pragma: no cover - part of hydra-core
        pass
    else:
        owners.append(basic_launcher)

    def observed(task: Callable[..., Any]) -> Callable[..., Any]:
        def task_function(cfg: Any) -> Any:
            _hydra_job_seen(sink, cfg)
            return task(cfg)

        task_function.__wrapped__ = task  # type: ignore[attr-defined]
        return task_function

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def run_job(*args: Any, **kwargs: Any) -> Any:
            if callable(kwargs.get("task_function")):
                kwargs["task_function"] = observed(kwargs["task_function"])
            elif args and callable(args[0]):
                args = (observed(args[0]), *args[1:])
            return original(*args, **kwargs)

        run_job.__wrapped__ = original  # type: ignore[attr-defined]
        return run_job

    def wrap_parser(original: Callable[..., Any]) -> Callable[..., Any]:
        def get_args_parser(*args: Any, **kwargs: Any) -> Any:
            parser = original(*args, **kwargs)
            # Hydra's own options (--multirun, --cfg, overrides): the argv holds them, the
            # composed config is the params
            setattr(parser, _NOT_PARAMS, True)
            return parser

        get_args_parser.__wrapped__ = original  # type: ignore[attr-defined]
        return get_args_parser

    with ExitStack() as stack:
        for owner in owners:
            if hasattr(owner, "run_job"):
                stack.enter_context(_patched(owner, "run_job", wrap))
        for name in ("hydra.main", "hydra._internal.utils"):
            module = sys.modules.get(name)
            if module is not None and callable(getattr(module, "get_args_parser", None)):
                stack.enter_context(_patched(module, "get_args_parser", wrap_parser))
        yield


def _hydra_job_seen(sink: _ParamSink, cfg: Any) -> None:
    """Log a job's config as params; tell the data watch about every file of its config folders."""
    from pcs.record.reads import saw_files

    try:
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # noqa: BLE001 - an unresolvable interpolation fails the job itself
        log.warning("pcs: could not read the Hydra config as params (%s); the argv has the overrides.", exc)
        values = None
    if isinstance(values, dict):
        sink.log(flat_config(values), "Hydra")
    saw_files(_hydra_config_folders())


def _hydra_config_folders() -> list[Path]:
    """The ``file://`` config folders the current Hydra job searched (not installed packages)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        sources = HydraConfig.get().runtime.config_sources
    except Exception:  # noqa: BLE001 - not inside a Hydra job, or another Hydra version
        return []
    folders = []
    for source in sources:
        if getattr(source, "schema", None) != "file" or not getattr(source, "path", None):
            continue
        path = Path(str(source.path).removeprefix("file://"))
        if path.is_dir() and not {"site-packages", "dist-packages"} & set(path.parts):
            folders.append(path)
    return folders


@contextmanager
def _mlflow_shared(run_id: str | None) -> Iterator[None]:
    """``mlflow.start_run()`` in the script returns the pcs run; ``mlflow.end_run()`` leaves it open."""
    import mlflow
    from mlflow.tracking import fluent

    if run_id is None:  # pragma: no cover - not inside a run
        yield
        return

    class SharedRun(fluent.ActiveRun):
        """The pcs run, handed to a script's ``with mlflow.start_run():``; leaving it ends nothing."""

        def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
            return exc_type is None

    def is_ours_on_top() -> bool:
        top = fluent.active_run()
        return top is not None and top.info.run_id == run_id

    def wrap_start(original: Callable[..., Any]) -> Callable[..., Any]:
        def start_run(run_id_arg: str | None = None, *args: Any, **kwargs: Any) -> Any:
            nested = kwargs.get("nested", args[2] if len(args) > 2 else False)
            if is_ours_on_top() and not nested and run_id_arg in (None, run_id):
                top = fluent.active_run()
                tags = kwargs.get("tags")
                if tags:
                    pcs_run = getattr(top, "pcs_run", None)
                    if pcs_run is not None:
                        pcs_run.set_tags(tags)
                return SharedRun(top)
            return original(run_id_arg, *args, **kwargs)

        start_run.__wrapped__ = original  # type: ignore[attr-defined]
        return start_run

    def wrap_end(original: Callable[..., Any]) -> Callable[..., Any]:
        def end_run(*args: Any, **kwargs: Any) -> Any:
            if is_ours_on_top():
                return None  # pcs ends the run when the script ends
            return original(*args, **kwargs)

        end_run.__wrapped__ = original  # type: ignore[attr-defined]
        return end_run

    with _patched(fluent, "start_run", wrap_start), _patched(mlflow, "start_run", wrap_start), \
            _patched(fluent, "end_run", wrap_end), _patched(mlflow, "end_run", wrap_end):
        yield
