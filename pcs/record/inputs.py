"""Inputs from other runs: the artifacts a run loads from its dependency runs, by digest.

While a run's entry point runs, every artifact it loads from another run
through pcs (``Run.download_artifacts``, ``load_text``, ``load_dict``) is
told to the active :class:`RunInputs` watches with its sha256 (each file of
a downloaded folder), so a rerun that loads a replaced artifact under the
same run id is named: ``dependency run 1a2b: data.json changed``.

Datasets logged with ``mlflow.log_input`` need no watch here: MLflow records
their names and digests in the run itself, and verification reads them there.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from pcs.record.reads import file_sha256

__all__ = ["RunInputs", "saw_artifact"]

_WATCHES: list[RunInputs] = []
_LOCK = threading.Lock()


class RunInputs:
    """The artifacts loaded from other runs while a block runs.

    After the block, :attr:`runs` maps each run id to ``{artifact path: sha256}``.
    """

    def __init__(self, own_run_id: str | None = None) -> None:
        self.own_run_id = own_run_id
        self.runs: dict[str, dict[str, str]] = {}

    def __enter__(self) -> RunInputs:
        with _LOCK:
            _WATCHES.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _LOCK:
            if self in _WATCHES:
                _WATCHES.remove(self)

    def to_dict(self) -> dict[str, Any]:
        return {run_id: dict(sorted(files.items())) for run_id, files in sorted(self.runs.items())}


def saw_artifact(run_id: str, artifact_path: str, local: Path) -> None:
    """Tell the active watches that the artifact ``artifact_path`` of run ``run_id`` was loaded into ``local``."""
    if not _WATCHES:
        return
    digests: dict[str, str] = {}
    base = artifact_path.strip("/")
    try:
        if local.is_dir():
            for folder, _, names in os.walk(local):
                for name in names:
                    path = Path(folder) / name
                    rel = path.relative_to(local).as_posix()
                    digests[f"{base}/{rel}" if base else rel] = file_sha256(path)[0]
        elif local.is_file():
            digests[base or local.name] = file_sha256(local)[0]
    except OSError:
        return
    with _LOCK:
        watches = list(_WATCHES)
    for watch in watches:
        if watch.own_run_id == run_id:
            continue  # a run reading its own artifacts reads its output
        watch.runs.setdefault(run_id, {}).update(digests)
