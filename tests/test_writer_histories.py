"""What pcs writes, pcs reads: long metric histories stream through bundles, big return values are refused.

Histories longer than ``INLINE_POINTS`` travel as JSON-lines files beside
``registry.yaml`` (read and written page by page), so a bundle of a long run
imports with memory that does not grow with its points; a return value too
large to read back is not recorded as if it could be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _registry_server import TOKEN

from pcs import Component, LocalRepo, Run
from pcs.errors import BundleError, InputLimitError
from pcs.transfer import _histories, export_bundle, import_bundle
from pcs.transfer._histories import HISTORY_DIR, INLINE_POINTS

# a long run is made by inserting its points straight into the SQLite store (logging 100k
# points through MLflow takes minutes on a loaded machine); exports and imports go through pcs
ROUND_TRIP = textwrap.dedent(
    """
    import json, os, resource, sqlite3, sys
    from pathlib import Path
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from pcs.transfer import _histories, export_bundle, import_bundle

    # pages far smaller than the history, so the test holds memory to one page, not to
    # "the whole history fits in a page" (pcs reads 50k points a page)
    _histories.PAGE = 5_000
    work = Path(sys.argv[1])
    source = work / "source.db"

    def long_run(points):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{source}"
        client = MlflowClient()
        run_id = client.create_run("0", tags={"pcs.run_type": "run"}).info.run_id
        client.log_batch(run_id, metrics=[Metric("loss", 0.0, 1_000, 0)])
        with sqlite3.connect(source) as db:
            db.executemany(
                "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                "VALUES (?, ?, ?, ?, ?, 0)",
                ((("loss", i * 0.25, 1_000 + i, run_id, i) for i in range(1, points))),
            )
        client.set_terminated(run_id)
        return run_id

    def round_trip(points, name):
        run_id = long_run(points)
        bundle = work / name
        export_bundle([run_id], bundle, include_artifacts=False)
        target = work / (name + ".db")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{target}"
        new_id = import_bundle(bundle)[run_id]
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before checking the copy
        with sqlite3.connect(target) as db:
            count, steps, low, high, wrong = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step), "
                "SUM(value != step * 0.25 OR timestamp != 1000 + step) FROM metrics "
                "WHERE run_uuid = ? AND key = 'loss'", (new_id,)
            ).fetchone()
        return {
            "points": count,
            "steps_ok": (steps, low, high) == (points, 0, points - 1),
            "values_ok": wrong == 0,
            "yaml_bytes": (bundle / "registry.yaml").stat().st_size,
            "rss_kib": rss_kib,
        }

    small = round_trip(2_000, "small")
    large = round_trip(int(sys.argv[2]), "large")
    print(json.dumps({"small": small, "large": large}))
    """
)


def test_a_50k_point_history_round_trips_with_memory_that_does_not_grow_with_points(tmp_path, template_store):
    import shutil

    shutil.copy(template_store, tmp_path / "source.db")
    script = tmp_path / "round_trip.py"
    script.write_text(ROUND_TRIP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "50000"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    small, large = report["small"], report["large"]
    assert small["points"] == 2_000 and small["steps_ok"] and small["values_ok"]
    assert large["points"] == 50_000 and large["steps_ok"] and large["values_ok"]
    # the histories are files; registry.yaml stays the size of a short run's
    assert large["yaml_bytes"] < 4 * small["yaml_bytes"] < 64 * 1024
    # 100k points inline (as lists in the spec, then YAML) cost about 200 MiB, 50k about
    # 100 MiB; streamed, the second round trip's peak is within a few pages of the first's
    growth_mib = (large["rss_kib"] - small["rss_kib"]) / 1024
    assert growth_mib < 48, report


def _bundle_with_long_history(tmp_path: Path, points: int = INLINE_POINTS + 5) -> tuple[Path, str]:
    from mlflow.entities import Metric

    with Run(run_name="long") as run:
        for start in range(0, points, 1000):
            run.client.log_batch(run.identifier, metrics=[
                Metric("loss", float(i), 1_000 + i, i) for i in range(start, min(points, start + 1000))
            ])
    bundle = tmp_path / "bundle"
    export_bundle([run.identifier], bundle, include_artifacts=False)
    return bundle, run.identifier


@pytest.fixture()
def other_store(tmp_path, monkeypatch, template_store):
    """Switch to a second, empty store (where the bundle's runs are not already)."""
    from conftest import make_store

    def switch() -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(tmp_path / "other", template_store))

    return switch


def test_a_history_file_that_was_changed_is_refused_naming_the_metric_and_line(tmp_path, other_store):
    bundle, run_id = _bundle_with_long_history(tmp_path)
    other_store()
    files = list((bundle / "artifacts" / run_id / HISTORY_DIR).glob("*.jsonl"))
    assert len(files) == 1
    lines = files[0].read_text().splitlines(keepends=True)
    lines[5] = '["x", 4, 1004]\n'
    files[0].write_text("".join(lines))
    registry = (bundle / "registry.yaml").read_text()
    import hashlib

    old = next(line.split(":")[1].strip() for line in registry.splitlines() if "sha256" in line)
    new = hashlib.sha256(files[0].read_bytes()).hexdigest()
    (bundle / "registry.yaml").write_text(registry.replace(old, new))

    with pytest.raises(BundleError, match=r"line 6 of the history of metric 'loss'"):
        import_bundle(bundle)


def test_a_history_file_missing_from_a_bundle_is_refused_as_truncated(tmp_path, other_store):
    bundle, run_id = _bundle_with_long_history(tmp_path)
    other_store()
    for path in (bundle / "artifacts" / run_id / HISTORY_DIR).glob("*.jsonl"):
        path.unlink()

    with pytest.raises(BundleError, match="history of metric 'loss'.*missing"):
        import_bundle(bundle)


def test_a_short_history_stays_inline_in_the_bundle_as_older_pcs_wrote_it(tmp_path, other_store):
    bundle, run_id = _bundle_with_long_history(tmp_path, points=10)
    other_store()

    assert not (bundle / "artifacts" / run_id).exists()
    text = (bundle / "registry.yaml").read_text()
    assert "pcs_format: 2" not in text and HISTORY_DIR not in text
    new_id = import_bundle(bundle)[run_id]
    assert [m.step for m in Run.from_existing_run_id(new_id).metric_history("loss")] == list(range(10))


BIG = '''
class Big:
    def make(self, mib=17):
        return "x" * (mib * 1024 * 1024)
'''


@pytest.fixture()
def big(tmp_path) -> Component:
    (tmp_path / "big.py").write_text(BIG)
    return Component.from_repo(LocalRepo("src", tmp_path), "big", "big.py", "Big", instantiate=True)


def test_a_return_value_too_large_to_read_back_is_not_recorded_and_says_why(big):
    run = big.run_with_arg_set("make")

    assert run.status == "FINISHED"
    assert run.tags["pcs.return_value_format"] == "none"
    assert any("bytes pcs reads back" in reason for reason in run.grade_reasons)
    fresh = Run.from_existing_run_id(run.identifier)
    with pytest.raises(Exception, match="no recorded return value"):
        fresh.return_value  # noqa: B018


def test_a_return_value_too_large_asked_for_as_yaml_fails_the_run(big):
    with pytest.raises(InputLimitError, match="bytes pcs reads back"):
        big.run_with_arg_set("make", return_value_format="yaml")

    failed = Run.get_all_runs()[0]
    assert failed.status == "FAILED"
    assert "InputLimitError" in failed.tags["pcs.error"]


@pytest.fixture()
def registry_url(tmp_path_factory) -> str:
    from _registry_server import shared_registry_server

    return shared_registry_server(tmp_path_factory)[0]


def test_a_long_history_is_published_and_pulled_through_the_registry_server(registry_url, other_store):
    from mlflow.entities import Metric

    from pcs.transfer import export_runs_by_id, import_run
    from pcs.web_registry import WebRegistry

    points = 3 * INLINE_POINTS
    with Run(run_name="long") as run:
        for start in range(0, points, 1000):
            run.client.log_batch(run.identifier, metrics=[
                Metric("loss", i / 4, 1_000 + i, i) for i in range(start, start + 1000)
            ])
    export_runs_by_id([run.identifier], WebRegistry(registry_url, token=TOKEN),
                      include_artifacts=False)
    reference = WebRegistry(registry_url).get_run_record(run.identifier)["metrics"]["loss"]
    assert reference["points"] == points and reference["history"].startswith(HISTORY_DIR)

    other_store()
    pulled = import_run(WebRegistry(registry_url), run.identifier)
    history = pulled.metric_history("loss")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (i, i / 4, 1_000 + i) for i in range(points)
    ]
    assert pulled.artifact_paths() == []  # the history file is not an artifact of the run


def test_a_history_of_many_pages_is_published_and_pulled_point_for_point(
    registry_url, other_store, monkeypatch, isolated
):
    import sqlite3

    from mlflow.entities import Metric

    from pcs.transfer import export_runs_by_id, import_run
    from pcs.web_registry import WebRegistry

    # pages far smaller than the history (pcs reads 50k points a page), and a last page
    # that is not full, so every page boundary of the export is crossed on the way
    monkeypatch.setattr(_histories, "PAGE", 1_000)
    points = 4 * 1_000 + 345
    with Run(run_name="many pages") as run:
        run.client.log_batch(run.identifier, metrics=[Metric("loss", 0.0, 1_000, 0)])
    # inserted straight into the store: logging thousands of points through MLflow takes a while
    with sqlite3.connect(isolated.removeprefix("sqlite:///")) as db:
        db.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "VALUES (?, ?, ?, ?, ?, 0)",
            (("loss", i / 4, 1_000 + i // 3, run.identifier, i) for i in range(1, points)),
        )
    export_runs_by_id([run.identifier], WebRegistry(registry_url, token=TOKEN),
                      include_artifacts=True)
    reference = WebRegistry(registry_url).get_run_record(run.identifier)["metrics"]["loss"]
    assert reference["points"] == points

    other_store()
    pulled = import_run(WebRegistry(registry_url), run.identifier)
    history = pulled.metric_history("loss")
    assert sorted((m.step, m.value, m.timestamp) for m in history) == [
        (i, i / 4, 1_000 + i // 3) for i in range(points)
    ]


def test_history_lines_are_what_json_writes_for_every_kind_of_value():
    from mlflow.entities import Metric

    from pcs.transfer.bundle import encode_value

    values = [0.0, -0.0, 0.25, -1.5, 1e308, -1e-308, 5e-324, 1 / 3, 123456789.0, 1e16,
              float("nan"), float("inf"), float("-inf")]
    page = [Metric("loss", v, 1_700_000_000_000 + i, i - 3) for i, v in enumerate(values)]

    expected = "".join(
        json.dumps([encode_value(m.value), m.step, m.timestamp]) + "\n" for m in page
    ).encode()
    assert _histories.point_lines(page) == expected
