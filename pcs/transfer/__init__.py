"""Moving runs between tracking stores: export to a registry or bundle, import from one.

- :mod:`pcs.transfer.bundle`: the format: a run's record, its checks, hashes
  and the removal of recorded credentials.
- :mod:`pcs.transfer.export`: :func:`export_runs`, :func:`export_runs_by_id`
  (publish to a registry server), :func:`export_bundle`.
- :mod:`pcs.transfer.importer`: :func:`import_bundle`, :func:`import_run`
  (pull), all or nothing per run and once per store, also when imports run
  concurrently or one was killed (claims: :mod:`pcs.transfer._claims`).

Long operations take ``progress=``, a :data:`pcs.progress.ProgressCallback`
told the bytes done. Example::

    from pcs import transfer

    transfer.export_bundle(["3f2a..."], Path("runs.tar.gz"))
    # on another machine
    mapping = transfer.import_bundle(Path("runs.tar.gz"))   # {original id: new id}
"""

from __future__ import annotations

from pcs.transfer.bundle import list_artifact_paths, metric_history, run_spec
from pcs.transfer.export import ExportResult, export_bundle, export_runs, export_runs_by_id
from pcs.transfer.importer import import_bundle, import_run

__all__ = [
    "export_runs",
    "export_runs_by_id",
    "export_bundle",
    "import_run",
    "import_bundle",
    "metric_history",
    "list_artifact_paths",
    "run_spec",
    "ExportResult",
]
