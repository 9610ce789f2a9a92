"""Long metric histories travel as JSON-lines files beside ``registry.yaml``, read and written in chunks.

A history of up to :data:`INLINE_POINTS` points stays inline in the run's
spec (``[[value, step, timestamp], ...]``, as before). A longer one is
written, page by page as it is read from the store, to
``<run's carried folder>/.pcs-histories/<sha256 of the name>.jsonl`` and the
spec holds a reference instead::

    metrics:
      loss: {history: .pcs-histories/3f2a....jsonl, points: 1000000, sha256: ...}

The file's first line is a header (``{"pcs_history": 1, "key": "loss"}``),
then one ``[value, step, timestamp]`` per line (NaN and infinities as
strings, as inline). The folder is the one the run's artifacts travel in
(bundles: ``artifacts/<run id>/``; the registry server: the run's artifact
upload), so bundles, ``pcs publish`` and ``pcs pull`` carry it with bounded
memory; the files are not artifacts of the run and are never uploaded as such.
A run spec with such a reference is written in run format 2, which an older
pcs refuses with "upgrade pcs" instead of misreading it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs.errors import BundleError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from pcs.run import Run

__all__ = [
    "HISTORY_DIR",
    "INLINE_POINTS",
    "STREAMED_RUN_FORMAT",
    "export_history",
    "point_lines",
    "file_histories",
    "check_history_file",
    "read_history_file",
    "log_file_histories",
]

HISTORY_DIR = ".pcs-histories"
INLINE_POINTS = 1000  # longer histories go to a file
INLINE_TOTAL = 50_000  # and so do all of a run's histories once its inline points reach this
STREAMED_RUN_FORMAT = 2  # a run spec with a history in a file
HISTORY_FORMAT = 1
# points read from the store per request: MLflow's SQL store pages by OFFSET over a sorted
# history, so each page costs a sort of the whole history; 50k points a page exported 1M
# points in 55-124 s against 144-231 s at 10k (peak 381 against 259 MiB; plain MLflow's one
# read of 1M points peaks at 645 MiB)
PAGE = 50_000
_BATCH = 1000  # points per log_batch on import (MLflow's most metrics per batch)
_MAX_LINE = 4096  # a point's line is < 100 bytes; a longer one is not a point


def _encode(value: float) -> Any:
    from pcs.transfer.bundle import encode_value

    return encode_value(value)


def _pages(run: Run, key: str) -> Iterator[list[Metric]]:
    """The metric's history from the store, a page at a time (store order: timestamp, step)."""
    from pcs import _writer

    _writer.flush_all()
    store = getattr(getattr(run.client, "_tracking_client", None), "store", None)
    token = None
    while True:
        try:
            page = store.get_metric_history(run.identifier, key, max_results=PAGE, page_token=token)  # type: ignore[union-attr]
        except (AttributeError, TypeError):  # a store without paging: one read
            yield run.metric_history(key)
            return
        token = getattr(page, "token", None)
        last = not token or not page
        yield page
        # let the page go before the next is read: one page in memory, not two
        del page
        if last:
            return


def export_history(
    run: Run, key: str, folder: Path | None, inline_so_far: int = 0
) -> list | dict[str, Any]:
    """The spec entry of one metric: inline points, or a reference to the file written in ``folder``.

    Args:
        run: the run.
        key: the metric's name.
        folder: the run's carried folder (None: keep every history inline).
        inline_so_far: points of the run's other histories already inline (a
            run of many metrics must not make a spec larger than pcs reads either).
    """
    pages = _pages(run, key)
    first = next(pages, [])
    short = len(first) <= INLINE_POINTS and inline_so_far + len(first) <= INLINE_TOTAL
    # whether there is a second page matters only to a history that may stay inline; a
    # long one is streamed from the first page on, so only one page is ever held
    second = next(pages, None) if len(first) >= PAGE and (folder is None or short) else None
    if second is None and (folder is None or short):
        points = sorted(first, key=lambda m: (m.step, m.timestamp))
        return [[_encode(m.value), m.step, m.timestamp] for m in points]
    if folder is None:  # no place for a file: inline, as earlier pcs did
        rest = [m for page in ([second] if second else []) for m in page] + [
            m for page in pages for m in page
        ]
        points = sorted(first + rest, key=lambda m: (m.step, m.timestamp))
        return [[_encode(m.value), m.step, m.timestamp] for m in points]
    name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".jsonl"
    target = folder / HISTORY_DIR / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    count = 0
    head = [first] if second is None else [first, second]
    del first, second  # written and dropped one by one below, not held to the end
    try:
        with open(tmp, "wb") as fh:
            header = (json.dumps({"pcs_history": HISTORY_FORMAT, "key": key}) + "\n").encode()
            fh.write(header)
            digest.update(header)
            for page in _chain(head, pages):
                chunk = point_lines(page)
                count += len(page)
                del page  # before the next page is read
                fh.write(chunk)
                digest.update(chunk)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"history": f"{HISTORY_DIR}/{name}", "points": count, "sha256": digest.hexdigest()}


# what json.dumps writes for the float reprs that are not JSON numbers (as inline: strings)
_NON_FINITE_JSON = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}


def point_lines(page: list[Metric]) -> bytes:
    """A page of points as history-file lines, byte for byte what ``json.dumps`` writes.

    One ``json.dumps([value, step, timestamp])`` per point was a sixth of the
    time of exporting a long history (200k points); formatting the three
    numbers directly writes the same bytes (``json`` writes a float as its
    ``repr``) for a fraction of it.
    """
    lines = []
    for m in page:
        value = float.__repr__(float(m.value))
        lines.append(f"[{_NON_FINITE_JSON.get(value, value)}, {int(m.step)}, {int(m.timestamp)}]\n")
    return "".join(lines).encode("ascii")


def _chain(head: list[list], rest: Iterator[list]) -> Iterator[list]:
    """The pages of ``head`` (emptied as they go, so none is held), then those of ``rest``."""
    while head:
        yield head.pop(0)
    yield from rest


def file_histories(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics of a run spec whose history is a file reference (``{key: reference}``)."""
    metrics = spec.get("metrics")
    if not isinstance(metrics, Mapping):
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, Mapping)}


def check_history_file(folder: Path, key: str, ref: Any, where: str) -> Path:
    """Check a history file against its reference: shape, sha256, and every point (streamed).

    Raises:
        BundleError: the reference is malformed, or the file is missing, changed or malformed.
    """
    from pcs.transfer.bundle import safe_join, sha256_file

    if not (
        isinstance(ref, Mapping) and isinstance(ref.get("history"), str)
        and isinstance(ref.get("sha256"), str) and _is_int(ref.get("points"))
        and ref["history"].startswith(f"{HISTORY_DIR}/")
    ):
        raise BundleError(
            f"{where} has a malformed reference for the history of metric {key!r}; expected "
            f"{{history: {HISTORY_DIR}/<file>.jsonl, points: N, sha256: <hex>}}."
        )
    path = safe_join(folder, ref["history"], where)
    if not path.is_file():
        raise BundleError(
            f"{where}: the history of metric {key!r} ({ref['history']}) is missing from the "
            "bundle; it is truncated. Export it again."
        )
    if sha256_file(path) != ref["sha256"]:
        raise BundleError(
            f"{where}: the history of metric {key!r} does not match its recorded sha256; the "
            "bundle is damaged. Export it again."
        )
    count = 0
    for _ in read_history_file(path, key, where):
        count += 1
    if count != ref["points"]:
        raise BundleError(
            f"{where}: the history of metric {key!r} holds {count} points but its record says "
            f"{ref['points']}; the bundle is damaged. Export it again."
        )
    return path


def read_history_file(path: Path, key: str, where: str) -> Iterator[tuple[float, int, int]]:
    """The points of a history file as ``(value, step, timestamp)``, one line at a time.

    Raises:
        BundleError: a line is not a point MLflow accepts (naming the metric and line).
    """
    from pcs._limits import INT64_MAX, INT64_MIN
    from pcs.transfer.bundle import decode_value

    with open(path, "rb") as fh:
        header = _line(fh, key, where, 1)
        try:
            head = json.loads(header)
        except ValueError:
            head = None
        if not isinstance(head, dict) or head.get("key") != key:
            raise BundleError(f"{where}: the history file of metric {key!r} has no valid header.")
        if not _is_int(head.get("pcs_history")) or head["pcs_history"] > HISTORY_FORMAT:
            raise BundleError(
                f"{where}: the history of metric {key!r} is in history format "
                f"{head.get('pcs_history')!r}; this pcs reads up to {HISTORY_FORMAT}. Upgrade pcs."
            )
        number = 1
        while True:
            number += 1
            raw = _line(fh, key, where, number)
            if not raw:
                return
            try:
                point = json.loads(raw)
            except (ValueError, RecursionError):
                point = None
            if not (
                isinstance(point, list) and len(point) == 3 and _is_value(point[0])
                and _is_int(point[1]) and _is_int(point[2])
                and INT64_MIN <= point[1] <= INT64_MAX and 0 <= point[2] <= INT64_MAX
            ):
                raise BundleError(
                    f"{where}: line {number} of the history of metric {key!r} is not a point "
                    "[value, step, timestamp] with a number (or NaN, Infinity, -Infinity), a "
                    "64-bit integer step and a non-negative 64-bit timestamp (milliseconds)."
                )
            yield decode_value(point[0]), point[1], point[2]


def _line(fh: Any, key: str, where: str, number: int) -> bytes:
    raw = fh.readline(_MAX_LINE + 1)
    if len(raw) > _MAX_LINE or (raw and not raw.endswith(b"\n")):
        raise BundleError(
            f"{where}: line {number} of the history of metric {key!r} is too long or cut off; "
            "the bundle is damaged."
        )
    return bytes(raw)


def log_file_histories(client: MlflowClient, run_id: str, spec: Mapping[str, Any], folder: Path | None) -> int:
    """Write the file histories of a checked spec into a run, in batches; the points written."""
    from mlflow.entities import Metric

    refs = file_histories(spec)
    if not refs:
        return 0
    if folder is None:
        raise BundleError(f"Run {spec.get('identifier')} has metric histories in files but no folder.")
    where = f"Run {spec.get('identifier')} in the registry"
    written = 0
    for key, ref in refs.items():
        batch: list[Metric] = []
        for value, step, timestamp in read_history_file(folder / ref["history"], key, where):
            batch.append(Metric(key, value, timestamp, step))
            if len(batch) >= _BATCH:
                client.log_batch(run_id, metrics=batch)
                written += len(batch)
                batch = []
        if batch:
            client.log_batch(run_id, metrics=batch)
            written += len(batch)
    return written


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_value(value: Any) -> bool:
    if isinstance(value, str):
        return value in ("NaN", "Infinity", "-Infinity")
    return isinstance(value, (int, float)) and not isinstance(value, bool)
