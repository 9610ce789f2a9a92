"""The tracking store's answers an import needs, each one paged search for many runs.

Imported runs keep their original's start time, so the copies of a bundle's
runs (complete ones carry ``pcs.imported_from``, half-written ones
``pcs.importing``) are found by one search over the bundle's start-time
window, not one search per run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pcs import _keys
from pcs.transfer import _claims
from pcs.transfer.bundle import RUN_ID_RE

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Run as MlflowRun

    from pcs.run import Run

__all__ = ["Store", "Copies", "origin_of"]

# a search of imported runs by start-time window reads at most this many runs per
# run looked up (plus a margin) before falling back to one search per run
_WINDOW_RUNS_PER_ID = 8
_WINDOW_MARGIN = 1000
_TERMINAL = ("FINISHED", "FAILED", "KILLED")
_IDS_PER_SEARCH = 500  # run ids in one ``attributes.run_id IN (...)`` filter


class Store:
    """The reads of the tracking store an import needs, each a paged search for many runs."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._experiment_ids: list[str] | None = None

    def experiment_ids(self, fresh: bool = False) -> list[str]:
        """Every active experiment's id, claims and holders left out."""
        if fresh or self._experiment_ids is None:
            ids: list[str] = []
            token = None
            while True:
                page = self.client.search_experiments(max_results=1000, page_token=token)
                ids.extend(
                    e.experiment_id for e in page
                    if not e.name.startswith((_claims.CLAIM_PREFIX, _claims.HOLDER_PREFIX))
                )
                token = page.token
                if not token:
                    break
            self._experiment_ids = ids
        return self._experiment_ids

    def search(
        self, clause: str, max_runs: int | None = None, fresh: bool = False
    ) -> list[MlflowRun]:
        from pcs.run import search_mlflow_runs

        return search_mlflow_runs(
            self.client, clause, self.experiment_ids(fresh), include_deleted=True,
            max_runs=max_runs,
        )

    def by_ids(self, run_ids: list[str]) -> dict[str, Run]:
        """The runs the store holds under these very ids."""
        from pcs.run import runs_by_ids

        found: dict[str, Run] = {}
        for start in range(0, len(run_ids), _IDS_PER_SEARCH):
            chunk = run_ids[start : start + _IDS_PER_SEARCH]
            found.update(runs_by_ids(self.client, chunk, self.experiment_ids()))
        return found

    def tagged(
        self, key: str, specs: Mapping[str, Mapping[str, Any]], fresh: bool = False
    ) -> list[MlflowRun]:
        """Runs tagged ``key`` that may belong to these specs' runs (a superset).

        Imported runs keep their original's start time, so one search over the
        specs' start-time window finds them all; specs without a start time, or
        a window holding too many runs, are looked up one value at a time.
        """
        if not specs:
            return []
        starts = [s.get("start_time") for s in specs.values()]
        timed = [t for t in starts if isinstance(t, int)]
        exact = [i for i, s in specs.items() if not isinstance(s.get("start_time"), int)]
        found: list[MlflowRun] = []
        if timed:
            limit = _WINDOW_RUNS_PER_ID * len(timed) + _WINDOW_MARGIN
            window = self.search(
                f"attributes.start_time >= {min(timed)} AND attributes.start_time <= "
                f"{max(timed)} AND tags.`{key}` IS NOT NULL",
                max_runs=limit + 1, fresh=fresh,
            )
            if len(window) <= limit:
                found += window
                fresh = False
            else:
                exact = list(specs)
        # a copy of a copy carries the first run's id as its origin
        keys = [key, _keys.ORIGIN_RUN_ID] if key == _keys.IMPORTED_FROM else [key]
        for value in _values_to_match(key, specs, exact):
            for name in keys:
                found += self.search(f"tags.`{name}` = '{value}'", fresh=fresh)
                fresh = False
        return found

    def copies(self, specs: Mapping[str, Mapping[str, Any]], fresh: bool = False) -> Copies:
        """The complete (and older pcs's incomplete) copies of these runs, and their origins' homes."""
        from pcs.run import _wrap

        copies = Copies()
        if not specs:
            return copies
        by_imported: dict[str, list[MlflowRun]] = {}
        by_origin: dict[str, list[MlflowRun]] = {}
        for run in self.tagged(_keys.IMPORTED_FROM, specs, fresh):
            tags = run.data.tags
            by_imported.setdefault(tags[_keys.IMPORTED_FROM], []).append(run)
            if tags.get(_keys.ORIGIN_RUN_ID):
                by_origin.setdefault(tags[_keys.ORIGIN_RUN_ID], []).append(run)
        for original, spec in specs.items():
            complete = None
            for run in by_imported.get(original, []):
                if _unfinished_by_older_pcs(run, spec):
                    copies.unfinished.setdefault(original, []).append(run.info.run_id)
                elif complete is None:
                    complete = run
            if complete is None and by_origin.get(original):
                complete = by_origin[original][0]  # a copy of a copy of it
            if complete is not None:
                copies.complete[original] = _wrap(complete, self.client)
        # the run a bundle's run was itself imported from (exported back to its first store)
        origins = {
            o for o in (origin_of(s) for s in specs.values()) if o and o not in specs
        }
        if origins:
            homes = self.by_ids(sorted(origins))
            for origin in origins - set(homes):
                found = by_imported.get(origin) or by_origin.get(origin)
                if found:
                    homes[origin] = _wrap(found[0], self.client)
            copies.homes.update(homes)
        return copies

    def partial(self, specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Ids of runs half-written by importers of these runs (no ``pcs.imported_from``)."""
        return [
            run.info.run_id
            for run in self.tagged(_keys.IMPORTING, specs, fresh=True)
            if run.data.tags.get(_keys.IMPORTING) in specs
            and not run.data.tags.get(_keys.IMPORTED_FROM)
        ]


def _values_to_match(key: str, specs: Mapping[str, Mapping[str, Any]], ids: list[str]) -> list[str]:
    values = list(ids)
    if key == _keys.IMPORTED_FROM:
        values += [o for o in (origin_of(specs[i]) for i in ids) if o]
    return sorted(v for v in set(values) if RUN_ID_RE.fullmatch(v))


def origin_of(spec: Mapping[str, Any]) -> str | None:
    """The run a bundle's run was itself imported from, if any (its ``pcs.imported_from``)."""
    tags = spec.get("tags")
    origin = tags.get(_keys.IMPORTED_FROM) if isinstance(tags, Mapping) else None
    return origin if isinstance(origin, str) and origin != spec.get("identifier") else None


def _unfinished_by_older_pcs(run: MlflowRun, spec: Mapping[str, Any]) -> bool:
    """A copy an older pcs (which tagged runs imported at creation) left half-written.

    It is still RUNNING although the record says the run ended, and lacks some
    of the record's params or metrics. A complete copy that was resumed later
    holds all of them, so it never looks unfinished.
    """
    if run.data.tags.get(_keys.IMPORTING) or run.info.status != "RUNNING":
        return False
    if spec.get("status", "FINISHED") not in _TERMINAL:
        return False
    params = spec.get("params")
    metrics = spec.get("metrics")
    wanted_params = set(params) if isinstance(params, Mapping) else set()
    wanted_metrics = set(metrics) if isinstance(metrics, Mapping) else set()
    return not (wanted_params <= set(run.data.params) and wanted_metrics <= set(run.data.metrics))


@dataclass
class Copies:
    """What :meth:`Store.copies` found."""

    complete: dict[str, Run] = field(default_factory=dict)  # original id -> its copy
    unfinished: dict[str, list[str]] = field(default_factory=dict)  # original id -> run ids
    homes: dict[str, Run] = field(default_factory=dict)  # origin id -> its run here
