"""What a component run records about its inputs, built in one place.

The run core calls this package and it never calls back: ``ComponentRun``
orchestrates a run, and hands the record plain facts (a
:class:`~pcs.record.closure.Part` per component, :class:`Facts` about the
command). Below it are only the foundations and the base (``pcs.repo``,
``pcs.cache``, ``pcs.specs``, ``pcs.errors``, ``pcs._keys``, ``pcs._config``).

One module per part of the record:

- :mod:`~pcs.record.closure`: the code closure. Components load in a fresh
  module namespace (a :class:`~pcs.record.closure.Session` over one
  :class:`~pcs.record.closure.Tree` per component) that serves, pins and
  hashes every module they import from their own repo; the pinned modules
  join the run command's code map, so they are part of its identifier.
- :mod:`~pcs.record.workers`: the manifest of served modules that worker
  processes of a run import (through ``pcs/record/_boot/sitecustomize.py``).
- :mod:`~pcs.record.code`: the source snapshot (``pcs/code/<path>``), where the
  code was and its git state (``pcs/code.yaml``, ``pcs/git_diff/``), the
  declared requirements (``pcs/requirements/``).
- :mod:`~pcs.record.reads`: data files the run reads under its components'
  folders (inotify on Linux, Python's audit hook everywhere), by sha256 and
  size; the small ones are kept (``pcs/data/``) and placed next to the
  recorded code when it reruns.
- :mod:`~pcs.record.environ`: environment variables the run's code reads
  (secrets as a hash), set back to the recorded values on rerun.
- :mod:`~pcs.record.inputs`: artifacts loaded from other runs, by sha256.
- :mod:`~pcs.record.environment`: Python, platform and distributions
  (``pcs/environment.yaml`` at the start, ``pcs/environment_used.yaml`` at the
  end), the modules the run used.
- :mod:`~pcs.record.determinism`: seeding, and the facts that decide whether
  two runs compute alike (thread counts, CPU, GPU), turned into the suspects
  of an unexplained divergence.
- :mod:`~pcs.record.grade`: ``portable`` / ``local`` / ``not-rerunnable``,
  with reasons; decided at the start, lowered at the end.
- :mod:`~pcs.record.staging`: :class:`Record`, the files and tags of one run:
  :meth:`Record.start` before the run exists (uploaded with its creation),
  :meth:`Record.watching` while the entry point runs, :meth:`Record.end` when
  it ends (also when it fails).

Where the work to come goes (issue 17):

(a) The closure follows imports wherever they resolve inside the project
    (anywhere but the environment): modules found through ``sys.path``
    entries the run added (recorded as ``../shared/featurize.py``), helpers
    next to a ``__main__`` script, packages with relative imports (loaded
    under their real package names), and Python files the code names to run
    as programs (subprocess, ``runpy``: pinned as ``@prepare.py``). The
    ``Session``'s finder decides what is served; what it pins reaches the code
    map through :func:`~pcs.record.closure.absorb`; what cannot be held lowers
    the grade through the session's ``problems``. Worker processes
    (multiprocessing spawn/forkserver, joblib/loky, concurrent.futures) import
    the same texts under the same names through :mod:`~pcs.record.workers`.
(b) Done: data reads, environment variables and other runs' artifacts are
    watched in :meth:`Record.watching` and staged in :meth:`Record.end` as
    ``pcs/inputs.yaml``; datasets logged with ``mlflow.log_input`` are in
    MLflow's own record of the run. Verification names a changed input as a
    cause by reading them (:mod:`pcs.verification.causes`).
(c) Outputs (the return value, captured stdout/stderr, child runs, logged
    models, fd-level capture) are not part of the record: ``pcs._capture``
    captures them, ``ComponentRun`` stages them next to the record's end
    files, and ``pcs.verification`` compares them.
"""

from __future__ import annotations

from pcs.record import closure
from pcs.record.closure import Part
from pcs.record.grade import GRADES, Grade
from pcs.record.staging import Facts, Record

__all__ = ["GRADES", "Facts", "Grade", "Part", "Record", "closure"]
