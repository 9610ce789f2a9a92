"""Reruns in a virtual environment rebuilt from a run's recorded distributions.

``rerun(env="recorded")`` builds (once per environment fingerprint, cached
under ``$PCS_HOME/venvs``) a virtual environment holding exactly the recorded
distribution versions, copies this pcs into it, and runs the rerun in a
subprocess there. The recorded Python version must match this interpreter's.
When a recorded distribution cannot be installed the build stops, the half
built environment is removed, and the error names the distributions.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _config
from pcs._features import provides
from pcs.errors import EnvironmentBuildError
from pcs.run import Run

if TYPE_CHECKING:  # pragma: no cover
    from pcs.component_run import ComponentRun

__all__ = ["build_recorded_env", "rerun_in_recorded_env", "venv_python"]

# distributions that the venv itself provides, or that are this package
_SKIP = {"pip", "setuptools", "wheel", "pcs", "distribute"}
_FAILED_RE = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the requirement)\s+(\S+)"
)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def build_recorded_env(environment: Mapping[str, Any], pip_args: list[str] | None = None) -> Path:
    """The cached virtual environment for a recorded environment (built when missing).

    Raises:
        EnvironmentBuildError: when Python differs or a distribution cannot be installed.
    """
    if not environment.get("distributions") or not environment.get("fingerprint"):
        raise EnvironmentBuildError(
            "The run has no recorded environment (pcs/environment.yaml is missing or empty), "
            "so there is nothing to rebuild. Rerun with env='current'."
        )
    recorded_python = (environment.get("python") or {}).get("version")
    here = ".".join(map(str, sys.version_info[:3]))
    if recorded_python and recorded_python != here:
        raise EnvironmentBuildError(
            f"The run was recorded with Python {recorded_python}, but this interpreter is "
            f"Python {here}. Run pcs from a Python {recorded_python} interpreter to rebuild "
            "its environment."
        )
    fingerprint = environment.get("fingerprint") or "unknown"
    root = _config.cache_dir("venvs")
    target = root / str(fingerprint)
    if venv_python(target).exists() and (target / ".pcs-complete").exists():
        return target
    distributions = {
        name: version
        for name, version in (environment.get("distributions") or {}).items()
        if name not in _SKIP
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{fingerprint}.", dir=root))
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(staging)], check=True, capture_output=True, text=True
        )
        requirements = staging / "pcs-requirements.txt"
        requirements.write_text(
            "".join(f"{name}=={version}\n" for name, version in sorted(distributions.items()))
        )
        result = subprocess.run(
            [
                str(venv_python(staging)), "-m", "pip", "install", "--no-deps",
                "--disable-pip-version-check", "-r", str(requirements), *(pip_args or []),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            failed = sorted(set(_FAILED_RE.findall(result.stdout + result.stderr)))
            detail = (
                f"these recorded distributions cannot be installed: {', '.join(failed)}"
                if failed
                else "pip failed: " + (result.stderr.strip().splitlines() or ["no output"])[-1]
            )
            raise EnvironmentBuildError(
                f"Cannot rebuild the recorded environment {fingerprint}: {detail}. They may be "
                "local or private packages, or versions removed from the index. Rerun with "
                "env='current' to use this environment instead."
            )
        _install_pcs(staging)
        (staging / ".pcs-complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
        # venv scripts embed their folder; the interpreter path is what we use, so they still run
        return target
    except subprocess.CalledProcessError as exc:
        raise EnvironmentBuildError(f"Could not create a virtual environment: {exc.stderr}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _install_pcs(venv: Path) -> None:
    """Copy this pcs (pure Python) into the venv's site-packages."""
    out = subprocess.run(
        [str(venv_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    )
    site = Path(out.stdout.strip())
    source = Path(__file__).resolve().parent
    shutil.copytree(source, site / "pcs", ignore=shutil.ignore_patterns("__pycache__"))


@provides("rerun_in_recorded_env")
def rerun_in_recorded_env(
    original: ComponentRun,
    code: str = "recorded",
    run_name: str | None = None,
) -> ComponentRun:
    """Rerun ``original`` in a subprocess inside its rebuilt environment."""
    venv = build_recorded_env(original.environment)
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = _config.tracking_uri()
    env["MLFLOW_EXPERIMENT_ID"] = original.experiment_id
    env.pop("PYTHONPATH", None)
    hashseed = original.environment.get("pythonhashseed")
    if hashseed is not None:
        env["PYTHONHASHSEED"] = str(hashseed)
    else:
        env.pop("PYTHONHASHSEED", None)
    args = [str(venv_python(venv)), "-m", "pcs", "rerun", original.identifier, "--code", code]
    result = subprocess.run(args, capture_output=True, text=True, env=env)
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
