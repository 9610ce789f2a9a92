"""Reruns in a virtual environment rebuilt from what a run used.

``rerun(env="recorded")`` runs the rerun in a subprocess inside a virtual
environment that holds:

- the distributions the run imported, and what they require, at the versions
  recorded with the run (``used_distributions`` and ``required_distributions``
  of its end record), installed with ``uv`` (``pip`` when uv is absent);
- this pcs, copied with a ``dist-info`` folder, so the rerun records pcs at
  the same version and its fingerprint matches the original's;
- a ``.pth`` file that appends the site-packages of the environment pcs runs
  from, so pcs's own runtime (MLflow and its requirements) stays importable
  without being installed again: the environment's own site-packages come
  first, so they are never shadowed.

A run recorded before pcs kept its used distributions is rebuilt from every
distribution it recorded (the old, slow way), and the progress callback says
so. Environments are cached under ``$PCS_HOME/venvs``, one folder per
Python, platform, installed set and pcs code. A build goes into a temporary
folder named after its pid (``.<key>.pcs-<pid>-venv-<random>``) and is
renamed into place when complete; a failed build is removed, one whose
process died is swept by the next build. A rerun holds the environment's
"in use" lock (a shared ``flock`` on ``<entry>.lock``) while it runs.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import platform
import re
import secrets
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _config, _keys, _signals
from pcs._features import provides
from pcs._liveness import pid_alive
from pcs.cache import holding
from pcs.errors import ArgumentError, EnvironmentBuildError
from pcs.progress import ProgressCallback
from pcs.record.script import argv_secrets
from pcs.run import Run
from pcs.secrets import env_name, is_marker, known_value
from pcs.specs import content_hash, dump_yaml

if TYPE_CHECKING:  # pragma: no cover
    from pcs.component_run import ComponentRun

__all__ = [
    "ProgressCallback",
    "build_recorded_env",
    "recorded_env",
    "rerun_in_recorded_env",
    "venv_python",
]

log = logging.getLogger(__name__)



ENVIRONMENT_USED_ARTIFACT = _keys.ENVIRONMENT_USED_ARTIFACT
MARKER = "pcs-environment.yaml"  # inside a complete environment: what it was built from
RUNTIME_PTH = "_pcs_runtime.pth"
# distributions a virtual environment brings, or that are this package (old records only)
_SKIP_LEGACY = {"pip", "setuptools", "wheel", "pcs", "distribute"}
_LEFTOVER = re.compile(r"^\.(?P<key>[^.]+)\.(?:pcs-(?P<pid>\d+)-|deleting-(?P<dpid>\d+)$)")


def venv_python(venv: Path) -> Path:
    """The interpreter of the virtual environment at ``venv``.

    Args:
        venv: the environment's folder.

    Returns:
        ``bin/python`` (``Scripts/python.exe`` on Windows).
    """
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


# -- what to install -----------------------------------------------------------------------


class _Plan:
    """What an environment for a recorded run holds, and the cache key naming it."""

    def __init__(self, environment: Mapping[str, Any]) -> None:
        python = environment.get("python") or {}
        recorded = python.get("version")
        here = ".".join(map(str, sys.version_info[:3]))
        if recorded and recorded != here:
            raise EnvironmentBuildError(
                f"The run was recorded with Python {recorded}, but this interpreter is "
                f"Python {here}. Run pcs from a Python {recorded} interpreter to rebuild "
                "its environment, or rerun with env='current'."
            )
        implementation = python.get("implementation")
        if implementation and implementation != platform.python_implementation():
            raise EnvironmentBuildError(
                f"The run was recorded with {implementation}, but this interpreter is "
                f"{platform.python_implementation()}. Run pcs from {implementation} to rebuild "
                "its environment, or rerun with env='current'."
            )
        used = environment.get("used_distributions")
        if used is not None:
            self.legacy = False
            pins = {k: str(v) for k, v in dict(used).items() if k != "pcs"}
            pins.update({k: str(v) for k, v in (environment.get("required_distributions") or {}).items()})
        else:
            distributions = environment.get("distributions")
            if not distributions:
                raise EnvironmentBuildError(
                    "The run has no recorded environment (pcs/environment.yaml is missing or "
                    "empty), so there is nothing to rebuild. Rerun with env='current'."
                )
            self.legacy = True
            pins = {k: str(v) for k, v in dict(distributions).items() if k not in _SKIP_LEGACY}
        self.pins = dict(sorted(pins.items()))
        platform_record = environment.get("platform") or {}
        self.key = content_hash(
            {
                "python": {"version": here, "implementation": platform.python_implementation()},
                "platform": {k: platform_record.get(k) for k in ("system", "machine")},
                "pins": self.pins,
                "pcs": _pcs_digest(),
            }
        )[:16]


def _pcs_dir() -> Path:
    return Path(__file__).resolve().parent


_DIGEST: list[str] = []


def _pcs_digest() -> str:
    """sha256 of this pcs's files: a changed pcs gets an environment of its own."""
    if not _DIGEST:
        digest = hashlib.sha256()
        root = _pcs_dir()
        for path in sorted(_pcs_files(root)):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        _DIGEST.append(digest.hexdigest())
    return _DIGEST[0]


def _pcs_files(root: Path) -> list[Path]:
    return [
        p for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".pyo"))
    ]


def _sweep(root: Path) -> list[Path]:
    """Remove half-built or half-deleted environments whose process died; return them."""
    removed: list[Path] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        match = _LEFTOVER.match(name)
        if match is None:
            continue
        pid = int(match["pid"] or match["dpid"])
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(root / name, ignore_errors=True)
            removed.append(root / name)
    return removed


def _complete(venv: Path) -> bool:
    return (venv / MARKER).is_file() and venv_python(venv).exists()


def _discard(path: Path) -> None:
    """Remove a folder so that it never looks valid half-way (rename first, then delete)."""
    doomed = path.parent / f".{path.name}.deleting-{os.getpid()}"
    try:
        path.rename(doomed)
    except OSError:
        doomed = path
    shutil.rmtree(doomed, ignore_errors=True)


def _size(path: Path) -> int:
    """Bytes on disk under ``path``, as ``du`` counts them (hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


# -- building --------------------------------------------------------------------------------


def _uv() -> str | None:
    """The uv executable: the ``uv`` distribution's, else one on PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _index_args_for_uv() -> list[str]:
    """pip's index settings from the environment, as uv options (uv reads only UV_* variables)."""
    args: list[str] = []
    env = os.environ
    if env.get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    if env.get("PIP_INDEX_URL") and not (env.get("UV_INDEX_URL") or env.get("UV_DEFAULT_INDEX")):
        args += ["--index-url", env["PIP_INDEX_URL"]]
    if env.get("PIP_EXTRA_INDEX_URL") and not env.get("UV_EXTRA_INDEX_URL"):
        for url in env["PIP_EXTRA_INDEX_URL"].split():
            args += ["--extra-index-url", url]
    if env.get("PIP_FIND_LINKS") and not env.get("UV_FIND_LINKS"):
        for link in env["PIP_FIND_LINKS"].split():
            args += ["--find-links", link]
    return args


def _site_packages(venv: Path) -> Path:
    """The venv's site-packages folder (purelib)."""
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else (
        "nt" if os.name == "nt" else "posix_prefix"
    )
    path = Path(sysconfig.get_path("purelib", scheme, vars={"base": str(venv), "platbase": str(venv)}))
    if path.is_dir():
        return path
    out = subprocess.run(
        [str(venv_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    )
    return Path(out.stdout.strip())


def _run(args: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    except OSError as exc:
        raise EnvironmentBuildError(f"Could not {what}: {exc}.") from None


def _create_venv(staging: Path, uv: str | None) -> None:
    if uv is not None:
        args = [uv, "venv", "--python", sys.executable, "--no-project", "--relocatable", "--quiet", str(staging)]
        env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
        result = _run(args, "create a virtual environment with uv", env=env)
    else:
        result = _run([sys.executable, "-m", "venv", "--without-pip", str(staging)], "create a virtual environment")
    if result.returncode != 0:
        raise EnvironmentBuildError(
            "Could not create a virtual environment: "
            + (result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}")
        )


def _install(
    staging: Path, pins: Mapping[str, str], uv: str | None, extra_args: Sequence[str], key: str
) -> None:
    requirements = staging / "pcs-requirements.txt"
    requirements.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()), encoding="utf-8")
    python = str(venv_python(staging))
    if uv is not None:
        args = [uv, "pip", "install", "--python", python, "--no-deps", "-r", str(requirements)]
        args += _index_args_for_uv() + list(extra_args)
        result = _run(args, "run uv", env=dict(os.environ, UV_PYTHON_DOWNLOADS="never"))
    else:
        args = [
            sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
            "--disable-pip-version-check", "-r", str(requirements), *extra_args,
        ]
        result = _run(args, "run pip")
    if result.returncode == 0:
        return
    output = result.stdout + "\n" + result.stderr
    failed = _named_in(output, pins)
    tool = "uv" if uv is not None else "pip"
    if failed:
        detail = "these recorded distributions cannot be installed: " + ", ".join(
            f"{n}=={pins[n]}" for n in failed
        )
    else:
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        detail = f"{tool} failed: " + (lines[-1].strip() if lines else f"exit code {result.returncode}")
    raise EnvironmentBuildError(
        f"Cannot rebuild the recorded environment {key}: {detail}. They may be local or "
        "private packages, or versions the package index no longer has. Point the installer "
        "at an index that has them (PIP_INDEX_URL / PIP_FIND_LINKS, or UV_* variables), or "
        "rerun with env='current' to use this environment instead."
    )


def _named_in(output: str, pins: Mapping[str, str]) -> list[str]:
    """The pinned names an installer's error output mentions (uv and pip name the culprits)."""
    text = re.sub(r"[-_.]+", "-", output.lower())
    return [
        name for name in pins
        if re.search(rf"(?<![a-z0-9-]){re.escape(name)}(?![a-z0-9]|-[a-z])", text)
    ]


def _record_line(path: Path, root: Path) -> str:
    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path.relative_to(root).as_posix()},sha256={digest},{len(data)}"


def _pcs_metadata(version: str) -> str:
    """METADATA of the running pcs (its installed metadata when there is one)."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        text = distribution("pcs").read_text("METADATA") or ""
    except PackageNotFoundError:
        text = ""
    if not text:
        return f"Metadata-Version: 2.1\nName: pcs\nVersion: {version}\n"
    head, sep, body = text.partition("\n\n")
    lines = [
        f"Version: {version}" if line.startswith("Version:") else line
        for line in head.splitlines()
    ]
    return "\n".join(lines) + ("\n" + sep + body if sep else "\n")


def _add_pcs(site_packages: Path) -> None:
    """Copy this pcs into the environment with a dist-info folder (name, version, RECORD)."""
    from pcs._version import __version__

    shutil.copytree(
        _pcs_dir(), site_packages / "pcs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    info = site_packages / f"pcs-{__version__}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(_pcs_metadata(__version__), encoding="utf-8")
    (info / "INSTALLER").write_text("pcs\n", encoding="utf-8")
    (info / "top_level.txt").write_text("pcs\n", encoding="utf-8")
    files = sorted(_pcs_files(site_packages / "pcs")) + sorted(info.iterdir())
    lines = [_record_line(p, site_packages) for p in files]
    lines.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _runtime_dirs() -> list[str]:
    """The site folders pcs's own runtime is imported from in this process."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _add_runtime_pth(site_packages: Path) -> None:
    # appended after the environment's own site-packages: what the run used wins
    lines = [f"import site; site.addsitedir({d!r})" for d in _runtime_dirs()]
    (site_packages / RUNTIME_PTH).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _build(
    plan: _Plan,
    target: Path,
    installer: str,
    extra_args: Sequence[str],
    progress: ProgressCallback | None,
) -> None:
    """Build the environment for ``plan`` in a temporary folder, then rename it to ``target``."""
    root = target.parent
    _sweep(root)

    def report(description: str, path: Path | None = None) -> None:
        if progress is not None:
            progress(description, _size(path) if path is not None else 0, None)

    uv = _uv() if installer in ("auto", "uv") else None
    if installer == "uv" and uv is None:
        raise EnvironmentBuildError(
            "installer='uv' was asked for, but uv is not installed. Install it with "
            "'pip install uv', or use installer='pip'."
        )
    if uv is None and installer == "auto":
        message = (
            "uv is not installed, so the environment is built with pip, which is slower "
            "('pip install uv' makes rebuilt environments faster)"
        )
        log.warning(message)
        report(message)
    if plan.legacy:
        report(
            f"the run has no record of the distributions it imported (recorded by an older "
            f"pcs): installing all {len(plan.pins)} distributions it recorded"
        )
    staging = root / f".{plan.key}.pcs-{os.getpid()}-venv-{secrets.token_hex(4)}"
    try:
        report(f"creating the environment {plan.key}")
        _create_venv(staging, uv)
        if plan.pins:
            shown = ", ".join(f"{n}=={v}" for n, v in list(plan.pins.items())[:3])
            more = f" and {len(plan.pins) - 3} more" if len(plan.pins) > 3 else ""
            report(f"installing {shown}{more} with {'uv' if uv else 'pip'}", staging)
            _install(staging, plan.pins, uv, extra_args, plan.key)
        site_packages = _site_packages(staging)
        report("adding pcs", staging)
        _add_pcs(site_packages)
        _add_runtime_pth(site_packages)
        (staging / MARKER).write_text(
            dump_yaml(
                {
                    "key": plan.key,
                    "python": sys.version.split()[0],
                    "installer": "uv" if uv else "pip",
                    "installed": plan.pins,
                    "from_every_recorded_distribution": plan.legacy,
                    "runtime": _runtime_dirs(),
                }
            ),
            encoding="utf-8",
        )
        try:
            staging.rename(target)
        except OSError:
            if not _complete(target):
                raise
            # another process finished the same environment first: use theirs
        report(f"built the environment {plan.key}", target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def recorded_env(
    environment: Mapping[str, Any],
    *,
    installer: str = "auto",
    extra_args: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> Iterator[Path]:
    """The environment for a recorded run, built when missing, held "in use" while the block runs.

    Args:
        environment: the run's environment record: ``{**start, **end}`` of
            ``pcs/environment.yaml`` and ``pcs/environment_used.yaml`` (the start
            record alone for a run recorded by an older pcs).
        installer: ``"auto"`` (uv when installed, else pip), ``"uv"`` or ``"pip"``.
        extra_args: more options for the installer (``--index-url ...``).
        progress: called as ``progress(description, bytes_on_disk, None)`` while building.

    Returns:
        A context manager yielding the environment's folder.

    Raises:
        EnvironmentBuildError: when the Python differs or a distribution cannot be installed.
    """
    with _locked_env(environment, installer, extra_args, progress) as (venv, _fd):
        yield venv


@contextmanager
def _locked_env(
    environment: Mapping[str, Any],
    installer: str,
    extra_args: Sequence[str],
    progress: ProgressCallback | None,
) -> Iterator[tuple[Path, int | None]]:
    if installer not in ("auto", "uv", "pip"):
        raise ArgumentError(f"installer must be 'auto', 'uv' or 'pip'; got {installer!r}.")
    plan = _Plan(environment)
    target = _config.cache_dir("venvs") / plan.key
    with holding(target) as (_entry, fd):
        if not _complete(target):
            if target.exists():
                _discard(target)  # broken (its interpreter is gone, or it was emptied by hand)
            _build(plan, target, installer, extra_args, progress)
        yield target, fd


def build_recorded_env(
    environment: Mapping[str, Any],
    *,
    installer: str = "auto",
    extra_args: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> Path:
    """The cached environment for a recorded run (built when missing).

    Args:
        environment: the run's environment record (see :func:`recorded_env`).
        installer: ``"auto"``, ``"uv"`` or ``"pip"``.
        extra_args: more options for the installer.
        progress: called while building.

    Returns:
        The environment's folder. Use :func:`recorded_env` to keep it locked
        while you run something in it.

    Raises:
        EnvironmentBuildError: when the Python differs or a distribution cannot be installed.
    """
    with recorded_env(environment, installer=installer, extra_args=extra_args, progress=progress) as venv:
        return venv


def _recorded_environment(original: ComponentRun) -> dict[str, Any]:
    """``{**start, **end}`` of the original run's two environment records."""
    environment = dict(original.environment)
    end = original._read_yaml(ENVIRONMENT_USED_ARTIFACT)
    if isinstance(end, dict):
        environment.update(end)
    return environment


def secret_arguments_env(arguments: Mapping[str, Any]) -> dict[str, str]:
    """``PCS_SECRET_<ARG>`` for each secret argument whose value this process holds.

    A secret given to this process (``--secret-arg``, ``pcs.secret``) reaches the
    rerun's child through its environment only, never its command line: a
    component's secret arguments, and the secret options in a script's argv
    (``--token pcs-secret:...``), named as the child's ``reveal_argv`` looks them up.
    """
    out: dict[str, str] = {}
    for functions in arguments.values():
        for kwargs in functions.values():
            for name, value in kwargs.items():
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    secrets = argv_secrets(value)  # a script's argv
                else:
                    secrets = [(name, value)] if is_marker(value) else []
                for arg, marker in secrets:
                    clear = known_value(marker)
                    if clear is not None:
                        out[env_name(arg)] = clear
    return out


def _rerun_env(environment: Mapping[str, Any], experiment_id: str) -> dict[str, str]:
    """The subprocess's variables: the recorded hash seed and thread settings, no PYTHONPATH."""
    from pcs.record.determinism import DETERMINISM_VARIABLES, THREAD_VARIABLES

    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = _config.tracking_uri()
    env["MLFLOW_EXPERIMENT_ID"] = experiment_id
    env.pop("PYTHONPATH", None)  # the environment decides what is imported
    hashseed = environment.get("pythonhashseed")
    if hashseed is not None:
        env["PYTHONHASHSEED"] = str(hashseed)
    else:
        env.pop("PYTHONHASHSEED", None)
    determinism = environment.get("determinism")
    if isinstance(determinism, dict) and isinstance(determinism.get("variables"), dict):
        recorded = determinism["variables"]
        for name in (*THREAD_VARIABLES, *DETERMINISM_VARIABLES):
            if name in recorded:
                env[name] = str(recorded[name])
            else:
                env.pop(name, None)
    return env


@provides("rerun_in_recorded_env")
def rerun_in_recorded_env(
    original: ComponentRun,
    code: str = "recorded",
    run_name: str | None = None,
    progress: ProgressCallback | None = None,
) -> ComponentRun:
    """Rerun ``original`` in a subprocess inside its rebuilt environment.

    Args:
        original: the run to reproduce (the subprocess reads its command from the store).
        code: ``"recorded"`` or ``"current"``, as for ``ComponentRun.rerun``.
        run_name: a name for the new run.
        progress: called while the environment is built.

    Returns:
        The new run.

    Raises:
        EnvironmentBuildError: when the environment cannot be built or the rerun fails in it.
    """
    environment = _recorded_environment(original)
    env = _rerun_env(environment, original.experiment_id)
    env.update(secret_arguments_env(original.run_command.argument_set.to_dict()))
    with _locked_env(environment, "auto", (), progress) as (venv, fd):
        args = [str(venv_python(venv)), "-m", "pcs", "rerun", original.identifier, "--code", code]
        # the rerun inherits the lock, so the environment stays "in use" as long as it runs;
        # signals to this process reach it, and it dies with this process
        result = _signals.run_child(args, env, pass_fds=() if fd is None else (fd,))
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:]) or "no output"
        raise EnvironmentBuildError(
            f"The rerun in the recorded environment {venv} exited with {result.returncode}:\n"
            f"{tail}\nIf the environment itself is broken, delete {venv} to rebuild it, or "
            "rerun with env='current'."
        )
    new_id = result.stdout.strip().splitlines()[-1]
    new = Run.from_existing_run_id(new_id)
    if run_name:
        new.client.update_run(new.identifier, name=run_name)
    return new  # type: ignore[return-value]
