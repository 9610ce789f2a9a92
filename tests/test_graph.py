"""Lineage pictures: collected from real runs, drawn as SVG and self-contained HTML.

One store holds a lineage with every kind of link (built once for the module,
then only read), around the component run ``fit``::

    prepare-data --dependency--> train <--inner-- pipeline --inner--> fit, plain-mlflow
    fit --rerun--> fit-rerun (verified: reproduced)
    fit, imported-baseline --dependency--> evaluate (FAILED)
    <original in another store> --import--> imported-baseline
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from conftest import make_store
from mlflow import MlflowClient

from pcs import Component, Run, _keys
from pcs.errors import ArgumentError
from pcs.graph import Lineage, lineage, to_html, to_svg, write, write_html, write_svg

SVG = "{http://www.w3.org/2000/svg}"
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
ABSENT_ORIGINAL = "0ff1ce0ff1ce0ff1ce0ff1ce0ff1ce00"  # a run of another store


class Model:
    def __init__(self, width: int = 2) -> None:
        self.width = width

    def fit(self, steps: int = 3) -> dict:
        return {"loss": 1.0 / (steps * self.width)}


@pytest.fixture(scope="module")
def built(tmp_path_factory, template_store):
    """The store with the lineage above, and the runs' ids by name."""
    folder = tmp_path_factory.mktemp("lineage_store")
    uri = make_store(folder / "store", template_store)
    (folder / "work").mkdir()
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("MLFLOW_", "PCS_")):
                mp.delenv(key)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("PCS_HOME", str(folder / "pcs_home"))
        mp.chdir(folder / "work")
        mp.setattr(tracking_utils, "_tracking_uri", None, raising=False)
        data = Run(run_name="prepare-data")
        data.end()
        baseline = Run(run_name="imported-baseline", tags={_keys.IMPORTED_FROM: ABSENT_ORIGINAL})
        baseline.end()
        with Run(run_name="pipeline") as pipeline:
            with Run(run_name="train") as train:
                train.add_dependency(data)
            fit = Component.from_class(Model, instantiate=True).run_with_arg_set(
                "fit", {"Model": {"fit": {"steps": 4}}}, run_name="fit"
            )
            plain = MlflowClient().create_run(
                pipeline.experiment_id, run_name="plain-mlflow",
                tags={_keys.PARENT_RUN_ID: pipeline.identifier},
            )
        rerun = Run.from_existing_run_id(fit.identifier).rerun(run_name="fit-rerun")
        rerun.set_tag(_keys.VERIFICATION, "reproduced")  # what a verified rerun records
        evaluate = Run(run_name="evaluate")
        evaluate.add_dependency(fit)
        evaluate.add_dependency(baseline)
        evaluate.end("FAILED")
    ids = {
        "prepare-data": data.identifier, "imported-baseline": baseline.identifier,
        "pipeline": pipeline.identifier, "train": train.identifier, "fit": fit.identifier,
        "plain-mlflow": plain.info.run_id, "fit-rerun": rerun.identifier,
        "evaluate": evaluate.identifier, "original": ABSENT_ORIGINAL,
    }
    return uri, ids


@pytest.fixture
def ids(built, monkeypatch):
    """This test reads the shared lineage store."""
    uri, by_name = built
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return by_name


def _fit_lineage(ids, depth: int = 3) -> Lineage:
    return lineage(Run.from_existing_run_id(ids["fit"]), depth=depth)


def _edges(result: Lineage, ids) -> set[tuple[str, str, str]]:
    name = {v: k for k, v in ids.items()}
    return {(name[e.source], name[e.target], e.kind) for e in result.edges}


# -- collecting ----------------------------------------------------------------------------------


def test_lineage_follows_every_link_both_ways(ids):
    result = _fit_lineage(ids, depth=3)
    assert result.focus == ids["fit"] and result.depth == 3
    assert {n.run_id for n in result.nodes} == set(ids.values())
    assert result.nodes[0].run_id == ids["fit"] and result.nodes[0].focus
    assert [n.run_id for n in result.nodes if n.focus] == [ids["fit"]]
    assert _edges(result, ids) == {
        ("pipeline", "fit", "inner"),
        ("pipeline", "train", "inner"),
        ("pipeline", "plain-mlflow", "inner"),
        ("prepare-data", "train", "dependency"),
        ("fit", "evaluate", "dependency"),
        ("imported-baseline", "evaluate", "dependency"),
        ("fit", "fit-rerun", "rerun"),
        ("original", "imported-baseline", "import"),
    }
    distances = {n.run_id: n.distance for n in result.nodes}
    assert distances[ids["pipeline"]] == distances[ids["evaluate"]] == distances[ids["fit-rerun"]] == 1
    assert distances[ids["train"]] == distances[ids["imported-baseline"]] == 2
    assert distances[ids["prepare-data"]] == distances[ids["original"]] == 3


def test_each_node_carries_status_type_grade_and_verdict(ids):
    result = _fit_lineage(ids, depth=3)
    fit = result.node(ids["fit"])
    assert (fit.type, fit.status, fit.entry_point) == ("component_run", "FINISHED", "Model.fit")
    assert fit.grade in ("portable", "local") and fit.verdict is None
    rerun = result.node(ids["fit-rerun"])
    assert (rerun.name, rerun.type, rerun.verdict) == ("fit-rerun", "component_run", "reproduced")
    assert rerun.grade in ("portable", "local")  # each run is graded when it starts
    assert result.node(ids["evaluate"]).status == "FAILED"
    assert result.node(ids["pipeline"]).type == "run"
    plain = result.node(ids["plain-mlflow"])
    assert (plain.type, plain.status, plain.grade) == ("mlflow", "RUNNING", None)
    original = result.node(ids["original"])
    assert (original.type, original.status, original.name) == ("external", None, None)
    assert result.to_dict()["nodes"][0]["run_id"] == ids["fit"]


def test_depth_limits_the_nodes(ids):
    counts = {}
    for depth in (0, 1, 2, 3, 8):
        result = _fit_lineage(ids, depth)
        counts[depth] = (len(result.nodes), len(result.edges))
        assert all(n.distance <= depth for n in result.nodes)
    assert counts == {0: (1, 0), 1: (4, 3), 2: (7, 6), 3: (9, 8), 8: (9, 8)}
    one = _fit_lineage(ids, 1)
    assert {n.run_id for n in one.nodes} == {
        ids["fit"], ids["pipeline"], ids["evaluate"], ids["fit-rerun"]
    }


def test_lineage_from_the_start_of_a_chain(ids):
    result = lineage(Run.from_existing_run_id(ids["prepare-data"]), depth=2)
    assert {n.run_id for n in result.nodes} == {ids["prepare-data"], ids["train"], ids["pipeline"]}
    assert _edges(result, ids) == {
        ("prepare-data", "train", "dependency"), ("pipeline", "train", "inner")
    }


def test_the_store_is_read_by_level_not_by_run(ids, monkeypatch):
    focus = Run.from_existing_run_id(ids["fit"])
    calls = {"search_runs": 0, "get_run": 0}
    for method in calls:
        real = getattr(MlflowClient, method)

        def counting(self, *args, _real=real, _name=method, **kwargs):
            calls[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, method, counting)
    result = lineage(focus, depth=3)
    assert len(result.nodes) == 9
    assert calls["get_run"] == 0
    # per level: one search for the runs it points at, one per link kind pointing into it
    # (a kind read tag-wide once serves the later levels)
    assert calls["search_runs"] <= 3 * (1 + 4)


@pytest.mark.parametrize("depth", [-1, True, "2", 1.5])
def test_a_bad_depth_is_refused(ids, depth):
    with pytest.raises(ArgumentError, match="depth"):
        lineage(Run.from_existing_run_id(ids["fit"]), depth=depth)


def test_sweep_cycle_and_odd_names(store):
    sweep = Run(run_name="sweep")
    sweep.set_tag(_keys.SWEEP_ID, sweep.identifier)
    trial = Run(run_name='<b>trial & "1"</b>', outer_run=sweep,
                tags={_keys.SWEEP_ID: sweep.identifier, _keys.TRIAL: "0"})
    other = Run(run_name="other")
    trial.add_dependency(other)
    other.add_dependency(trial)  # a cycle: both end up in one layer
    result = lineage(sweep, depth=2)
    assert result.node(sweep.identifier).type == "sweep"
    assert result.node(trial.identifier).type == "run"
    assert len(result.edges) == 3
    page = to_html(result)
    assert "<b>" not in page and "&lt;b&gt;trial &amp; &quot;1&quot;&lt;/b&gt;" in page
    root = ET.fromstring(to_svg(result).split("\n", 1)[1])
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert '<b>trial & "1"</b>' in texts
    assert root.find(f".//{SVG}b") is None


def test_a_rerun_sweep_draws_its_trials_in_order_beside_the_originals():
    from pcs.graph import _layers

    def sweep_of(name: str, rerun_of: dict[int, str] | None = None,
                 of: Run | None = None) -> tuple[Run, dict[int, Run]]:
        sweep = Run(run_name=name, tags={_keys.RERUN_OF: of.identifier} if of else None)
        sweep.set_tag(_keys.SWEEP_ID, sweep.identifier)
        trials = {}
        for index in (11, 10, 3, 0, 7, 1, 2, 9, 4, 8, 6, 5):  # recorded out of order
            tags = {_keys.SWEEP_ID: sweep.identifier, _keys.TRIAL: str(index)}
            if rerun_of:
                tags[_keys.RERUN_OF] = rerun_of[index]
            trials[index] = Run(run_name=f"trial {index}", outer_run=sweep, tags=tags)
            trials[index].end()
        sweep.end()
        return sweep, trials

    sweep, trials = sweep_of("sweep")
    rerun, again = sweep_of("rerun", {i: r.identifier for i, r in trials.items()}, sweep)

    layers = _layers(lineage(sweep, depth=2))

    ids = {r.identifier: f"t{i}" for i, r in trials.items()}
    ids.update({r.identifier: f"r{i}" for i, r in again.items()})
    ids.update({sweep.identifier: "S", rerun.identifier: "R"})
    named = [[ids[i] for i in layer] for layer in layers]
    assert named[0] == ["S"]
    # the original trials in order, together; the rerun sweep beside them, not among them
    assert named[1] == [f"t{i}" for i in range(12)] + ["R"]
    # each rerun trial level with its original: the rerun arrows run side by side
    assert named[2] == [f"r{i}" for i in range(12)]


# -- SVG -------------------------------------------------------------------------------------------


def _web_addresses(text: str) -> set[str]:
    return set(re.findall(r"https?://[^\s\"'<>)]*", text)) - NAMESPACES


def test_svg_shows_every_run_and_link(ids, tmp_path):
    result = _fit_lineage(ids, depth=3)
    path = write_svg(result, tmp_path / "lineage.svg")
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text.split("\n", 1)[1])  # past the XML declaration
    assert root.tag == f"{SVG}svg"
    nodes = {g.get("id")[5:]: g for g in root.iter(f"{SVG}g") if g.get("class", "").startswith("pcs-node")}
    assert set(nodes) == set(ids.values())
    for name, run_id in ids.items():
        group = nodes[run_id]
        title = group.find(f"{SVG}title").text
        assert run_id in title
        shown = "\n".join(t.text or "" for t in group.iter(f"{SVG}text"))
        assert run_id[:8] in shown
        if name != "original":
            assert name in shown and name in title
    assert "not in this store" in "".join(t.text or "" for t in nodes[ids["original"]].iter(f"{SVG}text"))
    assert "focus" in nodes[ids["fit"]].get("class").split()
    assert "status-failed" in nodes[ids["evaluate"]].get("class").split()
    assert "verified: reproduced" in "".join(t.text or "" for t in nodes[ids["fit-rerun"]].iter(f"{SVG}text"))
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class", "").startswith("pcs-edge")]
    assert len(edges) == 8
    kinds = sorted(g.get("class").split()[1] for g in edges)
    assert kinds == sorted(["link-inner"] * 3 + ["link-dependency"] * 3 + ["link-rerun", "link-import"])
    assert any(ids["pipeline"] in g.find(f"{SVG}title").text for g in edges)
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "legend")
    legend_text = " ".join(t.text or "" for t in legend.iter(f"{SVG}text"))
    for entry in ("finished", "failed", "running", "not in this store", "outer \u2192 inner",
                  "dependency \u2192 depender", "original \u2192 rerun", "this run"):
        assert entry in legend_text
    # nothing outside the file: no scripts, images, foreign content or web addresses
    for tag in ("script", "image", "foreignObject", "use", "metadata"):
        assert root.find(f".//{SVG}{tag}") is None
    assert _web_addresses(text) == set()


def test_depth_limits_the_picture(ids):
    root = ET.fromstring(to_svg(_fit_lineage(ids, depth=1)).split("\n", 1)[1])
    classes = [g.get("class", "") for g in root.iter(f"{SVG}g")]
    assert sum(c.startswith("pcs-node") for c in classes) == 4
    assert sum(c.startswith("pcs-edge") for c in classes) == 3
    assert "train" not in "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    alone = ET.fromstring(to_svg(_fit_lineage(ids, depth=0)).split("\n", 1)[1])
    classes = [g.get("class", "") for g in alone.iter(f"{SVG}g")]
    assert classes.count("pcs-node status-finished focus") == 1
    assert not any(c.startswith("pcs-edge") for c in classes)


# -- HTML ------------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Every tag with its attributes, the text of table rows, and the text inside <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: dict[str, list[str]] = {}
        self.style = ""
        self.svg_text: list[str] = []
        self._row: str | None = None
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "tr" and attributes.get("id", "").startswith("run-"):
            self._row = attributes["id"][4:]
            self.rows[self._row] = []
        self._in.append(tag)

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        if tag in self._in:
            while self._in.pop() != tag:
                pass

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self.rows[self._row].append(data.strip())
        if self._in and self._in[-1] == "style":
            self.style += data
        if self._in and self._in[-1] == "text" and data.strip():
            self.svg_text.append(data.strip())


def _check_self_contained(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    names = [tag for tag, _ in page.tags]
    for banned in ("script", "link", "img", "iframe", "object", "embed", "image", "use", "foreignobject"):
        assert banned not in names, banned
    for tag, attributes in page.tags:
        for key in ("src", "href", "xlink:href", "srcset", "data"):
            value = attributes.get(key)
            assert value is None or value.startswith("#"), (tag, key, value)
    assert "url(" not in page.style and "@import" not in page.style and "@font-face" not in page.style
    assert _web_addresses(text) == set()
    return page


def test_html_is_one_self_contained_page(ids, tmp_path):
    result = _fit_lineage(ids, depth=3)
    path = write_html(result, tmp_path / "lineage.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page = _check_self_contained(text)
    csp = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]
    assert sum(1 for t, _ in page.tags if t == "svg") == 1  # the picture is inline
    # per-node details: one table row per run, with its name, status, grade and verdict
    assert set(page.rows) == set(ids.values())
    for name, run_id in ids.items():
        assert page.rows[run_id][0] == run_id
        if name != "original":
            assert name in page.rows[run_id]
    assert "FAILED" in page.rows[ids["evaluate"]]
    assert "not in this store" in page.rows[ids["original"]]
    rerun_row = page.rows[ids["fit-rerun"]]
    assert "reproduced" in rerun_row and result.node(ids["fit-rerun"]).grade in rerun_row
    assert "Model.fit" in rerun_row
    # each node links to its row, each row to its node
    hrefs = {a.get("href") for t, a in page.tags if t == "a"}
    for run_id in ids.values():
        assert f"#run-{run_id}" in hrefs and f"#node-{run_id}" in hrefs
    assert any(ids["pipeline"][:8] in s for s in page.svg_text)


def test_write_chooses_the_format_by_suffix(ids, tmp_path):
    result = _fit_lineage(ids, depth=1)
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    assert write(result, tmp_path / "a.svg").read_text().startswith("<?xml")
    assert write(result, tmp_path / "b.HTML").read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(ArgumentError, match=r"\.html or \.svg") as refused:
        write(result, tmp_path / "c.png")
    assert "'.png'" in str(refused.value)
    with pytest.raises(ArgumentError, match="no suffix"):
        write(result, tmp_path / "lineage")
    with pytest.raises(ArgumentError, match="does not exist"):
        write(result, tmp_path / "missing" / "d.html")
    # written whole, through a temporary file that does not outlive the call
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.svg", "b.HTML"]


def test_the_same_lineage_draws_the_same_file(ids):
    result = _fit_lineage(ids, depth=2)
    assert to_svg(result) == to_svg(result)
    assert to_html(result) == to_html(result)


def test_importing_the_module_loads_no_heavy_library():
    code = (
        "import sys, pcs.graph; "
        "print(sorted(m for m in ('networkx', 'matplotlib', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- a real browser ------------------------------------------------------------------------------


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_a_headless_browser_renders_the_page(ids, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip(
            "no headless browser on PATH (looked for chromium, chromium-browser, google-chrome); "
            "install one (Debian: apt-get install chromium) to check the page renders. "
            "The structural checks above ran regardless."
        )
    from PIL import Image

    result = _fit_lineage(ids, depth=3)
    page = write_html(result, tmp_path / "lineage.html")
    url = page.resolve().as_uri()
    shot = tmp_path / "shot.png"
    common = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1200",
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, env=env
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Page()
    parsed.feed(dom.stdout)
    # the browser built the inline SVG: every node's label is in its text elements
    shown = "\n".join(parsed.svg_text)
    for name, run_id in ids.items():
        assert run_id[:8] in shown
        if name != "original":
            assert name in shown
    subprocess.run(
        [*common, f"--screenshot={shot}", url], capture_output=True, timeout=120, env=env, check=True
    )
    image = Image.open(shot).convert("RGB")
    colours = dict((c, n) for n, c in image.getcolors(maxcolors=1 << 24))
    assert len(colours) > 50  # not blank
    # the boxes were painted in their status colours: finished, failed, running
    for fill in ((0xC8, 0xE6, 0xC9), (0xFF, 0xCD, 0xD2), (0xBB, 0xDE, 0xFB)):
        assert colours.get(fill, 0) > 500, fill
