"""Lineage pictures: the runs around one run, drawn as an SVG or a self-contained HTML page.

``lineage(run, depth)`` walks the links pcs and MLflow record, both ways, up to
``depth`` links away from the run:

==========  =======================  ====================================
link        edge (arrow)             stored as (on the run the arrow hits)
==========  =======================  ====================================
inner       outer -> inner           ``mlflow.parentRunId``
dependency  dependency -> depender   ``pcs.depends_on`` (JSON list)
rerun       original -> rerun        ``pcs.rerun_of``
import      original -> imported     ``pcs.imported_from``
==========  =======================  ====================================

Every tag sits on the run the arrow points at, so the arrows follow time: the
earlier run on the left, what came of it on the right. A linked run the store
does not hold (the original of an imported run, a dependency left behind by an
export) is an *external* node.

Layout and rendering come from well-kept libraries rather than hand-placed
boxes: networkx layers the graph by topological generation (cycles collapsed
first) and places the layers with ``multipartite_layout``; matplotlib measures
the labels, clips arrows at the boxes and writes the SVG, with text kept as
text. The HTML page embeds that SVG with inline styles only, so it opens
offline and loads nothing.

Example::

    from pcs import Run
    from pcs.graph import lineage, write

    write(lineage(Run.from_existing_run_id("3f2a..."), depth=2), "lineage.html")
"""

from __future__ import annotations

import html
import io
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _keys
from pcs.errors import ArgumentError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from pcs.run import Run

__all__ = [
    "Lineage",
    "LineageNode",
    "LineageEdge",
    "LINK_KINDS",
    "FORMATS",
    "lineage",
    "to_svg",
    "to_html",
    "write",
    "write_svg",
    "write_html",
]

# kind -> (tag on the run the arrow points at, what the legend calls it)
_LINKS: dict[str, tuple[str, str]] = {
    "inner": (_keys.PARENT_RUN_ID, "outer \u2192 inner"),
    "dependency": (_keys.DEPENDS_ON, "dependency \u2192 depender"),
    "rerun": (_keys.RERUN_OF, "original \u2192 rerun"),
    "import": (_keys.IMPORTED_FROM, "original \u2192 imported copy"),
}
LINK_KINDS = tuple(_LINKS)
FORMATS = (".html", ".svg")

_TYPE_LABELS = {
    "mlflow": "MLflow run",
    "run": "pcs run",
    "component_run": "component run",
    "sweep": "sweep",
    "external": "not in this store",
}
# status -> (fill, border); anything unknown is drawn like SCHEDULED
_STATUS_COLOURS = {
    "FINISHED": ("#c8e6c9", "#2e7d32"),
    "RUNNING": ("#bbdefb", "#1565c0"),
    "FAILED": ("#ffcdd2", "#c62828"),
    "KILLED": ("#ffe0b2", "#e65100"),
    "SCHEDULED": ("#eeeeee", "#616161"),
    "EXTERNAL": ("#ffffff", "#757575"),
}
_EDGE_STYLES: dict[str, tuple[str, Any]] = {  # kind -> (colour, line style)
    "inner": ("#546e7a", "--"),
    "dependency": ("#1a237e", "-"),
    "rerun": ("#6a1b9a", "-."),
    "import": ("#795548", ":"),
}
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_NS = "http://www.w3.org/1999/xlink"


@dataclass(frozen=True)
class LineageNode:
    """One run in a lineage (or a run the store does not hold, when ``type`` is ``external``)."""

    run_id: str
    name: str | None
    status: str | None  # FINISHED, FAILED, ...; None for an external run
    type: str  # mlflow, run, component_run, sweep or external
    entry_point: str | None  # "component.entry_point" of a component run
    grade: str | None  # the pcs.reproducibility tag
    verdict: str | None  # the pcs.verification tag of a verified rerun
    focus: bool
    distance: int  # links away from the focus run
    deleted: bool = False
    trial: int | None = None  # a sweep's trial: its index (pcs.trial)
    sweep_id: str | None = None  # a sweep's trial: its sweep (pcs.sweep_id)

    @property
    def type_label(self) -> str:
        return _TYPE_LABELS.get(self.type, self.type)


@dataclass(frozen=True)
class LineageEdge:
    """A link between two runs, drawn as an arrow from ``source`` to ``target``."""

    source: str
    target: str
    kind: str  # one of LINK_KINDS

    @property
    def label(self) -> str:
        return _LINKS[self.kind][1]


@dataclass(frozen=True)
class Lineage:
    """The runs around a focus run and the links between them."""

    focus: str
    depth: int
    nodes: tuple[LineageNode, ...]  # the focus first, then by distance
    edges: tuple[LineageEdge, ...]

    def node(self, run_id: str) -> LineageNode:
        """The node of this run id.

        Raises:
            KeyError: when the run is not in the lineage.
        """
        for node in self.nodes:
            if node.run_id == run_id:
                return node
        raise KeyError(run_id)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "focus": self.focus,
            "depth": self.depth,
            "nodes": [asdict(n) for n in self.nodes],
            "edges": [asdict(e) for e in self.edges],
        }


# -- collecting -------------------------------------------------------------------------------


def lineage(run: Run, depth: int = 2) -> Lineage:
    """Collect the runs up to ``depth`` links away from ``run``, following every link both ways.

    The store is read level by level: one search for the runs a level points at,
    and one search per link kind for the runs pointing into it (never one
    ``get_run`` per run). MLflow's search has no OR or IN on tags, so a level of
    several runs reads every run carrying that link tag once, and later levels
    reuse what it read.

    Args:
        run: the focus run.
        depth: how many links away to go (0: the run alone).

    Returns:
        The Lineage: nodes (the focus first) and edges.

    Raises:
        ArgumentError: when depth is not a whole number of at least 0.
    """
    from pcs.run import all_experiment_ids, runs_by_ids

    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ArgumentError(
            f"depth must be a whole number of links, 0 or more; got {depth!r}. "
            "Use 1 for the direct neighbours, 2 (the default) for their neighbours too."
        )
    client = run.client
    experiment_ids = all_experiment_ids(client)
    runs: dict[str, Run] = {run.identifier: run}
    distance: dict[str, int] = {run.identifier: 0}
    external: list[str] = []
    tag_wide: dict[str, list[Run]] = {}  # kind -> every run carrying its tag, read once
    frontier = [run]
    for level in range(1, depth + 1):
        if not frontier:
            break
        found: dict[str, Run] = {}
        wanted = [src for r in frontier for _, src in _pointers(r) if src not in distance]
        if wanted:
            held = runs_by_ids(client, wanted, experiment_ids)
            for run_id in dict.fromkeys(wanted):
                if run_id in held:
                    found[run_id] = held[run_id]
                else:
                    external.append(run_id)
                    distance[run_id] = level
        ids = {r.identifier for r in frontier}
        for kind in LINK_KINDS:
            for other in _pointing_at(client, kind, ids, experiment_ids, tag_wide):
                if other.identifier not in distance:
                    found.setdefault(other.identifier, other)
        for run_id, other in found.items():
            distance[run_id] = level
            runs[run_id] = other
        frontier = list(found.values())
    edges: dict[tuple[str, str, str], LineageEdge] = {}
    for target in runs.values():
        for kind, source in _pointers(target):
            if source in distance and source != target.identifier:
                edges.setdefault((source, target.identifier, kind), LineageEdge(source, target.identifier, kind))
    nodes = [_node(r, distance[i], i == run.identifier) for i, r in runs.items()]
    nodes += [_external_node(i, distance[i]) for i in external]
    nodes.sort(key=lambda n: n.distance)  # stable: discovery order within a distance
    return Lineage(run.identifier, depth, tuple(nodes), tuple(edges.values()))


def _pointers(run: Run) -> list[tuple[str, str]]:
    """(kind, source run id) of every link stored on ``run``: the runs it points back at."""
    tags = run.tags
    out: list[tuple[str, str]] = []
    for kind, (key, _) in _LINKS.items():
        if kind == "dependency":
            out.extend((kind, i) for i in run.dependency_ids if i)
        elif tags.get(key):
            out.append((kind, tags[key]))
    return out


def _pointing_at(
    client: MlflowClient,
    kind: str,
    ids: set[str],
    experiment_ids: list[str],
    tag_wide: dict[str, list[Run]],
) -> list[Run]:
    """The runs whose ``kind`` link points at one of ``ids``: one paged search."""
    from pcs.run import _wrap, search_mlflow_runs

    key = _LINKS[kind][0]
    safe = sorted(i for i in ids if _SAFE_ID.fullmatch(i))
    if not safe:
        return []
    if len(safe) == 1 and kind not in tag_wide:
        value = f"%\"{safe[0]}\"%" if kind == "dependency" else safe[0]
        op = "LIKE" if kind == "dependency" else "="
        candidates = [
            _wrap(r, client)
            for r in search_mlflow_runs(
                client, f"tags.`{key}` {op} '{value}'", experiment_ids,
                order_by=["attributes.start_time ASC"],
            )
        ]
    else:
        if kind not in tag_wide:
            tag_wide[kind] = [
                _wrap(r, client)
                for r in search_mlflow_runs(
                    client, f"tags.`{key}` LIKE '%'", experiment_ids,
                    order_by=["attributes.start_time ASC"],
                )
            ]
        candidates = tag_wide[kind]
    # the search narrows; the parsed tag decides (a LIKE on a JSON list can over-match)
    return [r for r in candidates if any(k == kind and s in ids for k, s in _pointers(r))]


def _run_type(run: Run) -> str:
    tags = run.tags
    run_type = tags.get(_keys.RUN_TYPE)
    # a sweep's outer run: typed so, or the run a sweep id names
    if run_type == "sweep" or tags.get(_keys.SWEEP_ID) == run.identifier:
        return "sweep"
    if run_type == _keys.RUN_TYPE_COMPONENT:
        return "component_run"
    if run_type == _keys.RUN_TYPE_RUN:
        return "run"
    return "mlflow"


def _node(run: Run, distance: int, focus: bool) -> LineageNode:
    tags = run.tags
    entry = tags.get(_keys.ENTRY_POINT)
    component = tags.get(_keys.COMPONENT)
    return LineageNode(
        run_id=run.identifier,
        name=run.info.run_name or None,
        status=run.info.status,
        type=_run_type(run),
        entry_point=(f"{component}.{entry}" if component else entry) if entry else None,
        grade=tags.get(_keys.GRADE) or None,
        verdict=tags.get(_keys.VERIFICATION) or None,
        focus=focus,
        distance=distance,
        deleted=run.info.lifecycle_stage == "deleted",
        trial=int(tags[_keys.TRIAL]) if tags.get(_keys.TRIAL, "").isdigit() else None,
        sweep_id=tags.get(_keys.SWEEP_ID) if tags.get(_keys.TRIAL) else None,
    )


def _external_node(run_id: str, distance: int) -> LineageNode:
    return LineageNode(
        run_id=run_id, name=None, status=None, type="external", entry_point=None,
        grade=None, verdict=None, focus=False, distance=distance,
    )


# -- layout -------------------------------------------------------------------------------------


def _layers(lineage: Lineage) -> list[list[str]]:
    """Run ids by layer (left to right), ordered within each layer to cross few arrows."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(n.run_id for n in lineage.nodes)
    graph.add_edges_from((e.source, e.target) for e in lineage.edges)
    # a cycle (two runs depending on each other) shares one layer
    dag = nx.condensation(graph)
    members = dag.graph["mapping"]
    generation = {
        scc: i for i, group in enumerate(nx.topological_generations(dag)) for scc in group
    }
    nodes = {n.run_id: n for n in lineage.nodes}
    # a sweep's trials start in trial order (0, 1, 2, ...), after the other runs of the layer
    order = {
        n.run_id: (n.trial is not None, n.trial if n.trial is not None else 0, i)
        for i, n in enumerate(lineage.nodes)
    }
    layers: list[list[str]] = [[] for _ in range(max(generation.values()) + 1)]
    for run_id in sorted(graph.nodes, key=order.__getitem__):
        layers[generation[members[run_id]]].append(run_id)
    # barycentre sweeps: a run moves towards the runs it links to ...
    layer_of = {run_id: i for i, layer in enumerate(layers) for run_id in layer}
    for _ in range(2):
        for forward in (True, False):
            sequence = range(1, len(layers)) if forward else range(len(layers) - 2, -1, -1)
            for i in sequence:
                rank = {run_id: r for layer in layers for r, run_id in enumerate(layer)}
                neighbours = graph.predecessors if forward else graph.successors
                centre = {}
                for here, run_id in enumerate(layers[i]):
                    linked = [rank[o] for o in neighbours(run_id) if layer_of[o] != i]
                    centre[run_id] = sum(linked) / len(linked) if linked else float(here)
                layers[i] = sorted(layers[i], key=lambda r: (centre[r], order[r]))
    # ... then neighbours swap places while that uncrosses arrows (ties the sweeps leave)
    undirected = graph.to_undirected(as_view=True)
    for _ in range(len(graph)):
        rank = {run_id: r for layer in layers for r, run_id in enumerate(layer)}

        def crossings(u: str, v: str, rank: dict[str, int] = rank) -> int:
            """Arrows of u that cross arrows of v when u sits above v."""
            return sum(
                1 for a in undirected[u] for b in undirected[v]
                if layer_of[a] == layer_of[b] != layer_of[u] and rank[a] > rank[b]
            )

        swapped = False
        for layer in layers:
            for j in range(len(layer) - 1):
                u, v = layer[j], layer[j + 1]
                if crossings(v, u) < crossings(u, v):
                    layer[j], layer[j + 1] = v, u
                    rank[u], rank[v] = j + 1, j
                    swapped = True
        if not swapped:
            break
    return [_trials_in_order(layer, nodes) for layer in layers]


def _trials_in_order(layer: list[str], nodes: dict[str, LineageNode]) -> list[str]:
    """The layer with each sweep's trials together, in trial order, where the first of them sits.

    Other runs keep their places around them, so a sweep's rerun (or the sweep
    itself) never lands between its trials and its arrows do not cross them.
    """
    first: dict[str, int] = {}
    for place, run_id in enumerate(layer):
        node = nodes.get(run_id)
        if node is not None and node.trial is not None and node.sweep_id:
            first.setdefault(node.sweep_id, place)

    def key(item: tuple[int, str]) -> tuple[int, int, int]:
        place, run_id = item
        node = nodes.get(run_id)
        if node is not None and node.trial is not None and node.sweep_id in first:
            return first[node.sweep_id], 0, node.trial
        return place, 1, 0

    return [run_id for _, run_id in sorted(enumerate(layer), key=key)]


def _positions(layers: list[list[str]]) -> dict[str, tuple[float, float]]:
    """Layer and row of each run, in grid units (x: layer, y: row from the top, centred)."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(run_id for layer in layers for run_id in layer)
    pos = nx.multipartite_layout(graph, subset_key=dict(enumerate(layers)))
    xs = [float(p[0]) for p in pos.values()]
    ys = [float(p[1]) for p in pos.values()]
    # the layout is a uniform grid scaled to fit [-1, 1]; back to grid units
    columns = len(layers) - 1
    rows = max(len(layer) for layer in layers) - 1
    x0, x_span = min(xs), (max(xs) - min(xs)) or 1.0
    y1, y_span = max(ys), (max(ys) - min(ys)) or 1.0
    return {
        run_id: (
            (float(p[0]) - x0) / x_span * columns,
            (y1 - float(p[1])) / y_span * rows,
        )
        for run_id, p in pos.items()
    }


# -- rendering ----------------------------------------------------------------------------------


def _short(text: str, limit: int = 36) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _label(node: LineageNode) -> str:
    if node.type == "external":
        return "\n".join([node.run_id[:12], "not in this store"])
    lines = [
        _short(node.name or "(unnamed)"),
        f"{node.run_id[:8]}  {node.status}" + ("  (deleted)" if node.deleted else ""),
        _short(node.entry_point) if node.entry_point else node.type_label,
    ]
    if node.grade:
        lines.append(f"grade: {node.grade}")
    if node.verdict:
        lines.append(f"verified: {node.verdict}")
    return "\n".join(lines)


def _details(node: LineageNode) -> str:
    """The tooltip of a node: everything the table shows."""
    rows = [
        ("run", node.run_id), ("name", node.name), ("status", node.status),
        ("type", node.type_label), ("entry point", node.entry_point),
        ("grade", node.grade), ("verification", node.verdict),
        ("links away", str(node.distance)),
    ]
    return "\n".join(f"{k}: {v}" for k, v in rows if v)


def _colours(node: LineageNode) -> tuple[str, str]:
    key = "EXTERNAL" if node.type == "external" else (node.status or "SCHEDULED")
    return _STATUS_COLOURS.get(key, _STATUS_COLOURS["SCHEDULED"])


def _figure_svg(lineage: Lineage) -> str:
    """matplotlib's SVG of the lineage (before pcs adds tooltips and ids)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    nodes = {n.run_id: n for n in lineage.nodes}
    layers = _layers(lineage)
    grid = _positions(layers)
    settings: dict[Any, Any] = {"svg.fonttype": "none", "svg.hashsalt": "pcs-lineage", "font.size": 9}
    with matplotlib.rc_context(settings):
        # a Figure without pyplot: no global figure manager, no GUI backend
        fig = Figure(figsize=(4, 3), dpi=72)
        FigureCanvasAgg(fig)
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        pad = 0.45  # of the font size, around the label inside its box
        texts = {}
        for run_id, node in nodes.items():
            fill, border = _colours(node)
            texts[run_id] = ax.text(
                0, 0, _label(node), ha="center", va="center", multialignment="left",
                fontweight="bold" if node.focus else "normal", gid=f"node-{run_id}",
                bbox={
                    "boxstyle": f"round,pad={pad}", "facecolor": fill, "edgecolor": border,
                    "linewidth": 3.0 if node.focus else 1.2,
                    "linestyle": "--" if node.type == "external" else "-",
                },
            )
        # label sizes in inches, measured the way they will be drawn
        sizes = [t.get_window_extent(renderer) for t in texts.values()]
        extra = 2 * pad * 9 / 72 + 0.05
        box_w = max(s.width for s in sizes) / fig.dpi + extra
        box_h = max(s.height for s in sizes) / fig.dpi + extra
        col, row, margin = box_w + 0.9, box_h + 0.35, 0.3
        graph_w = (len(layers) - 1) * col + box_w + 2 * margin
        graph_h = (max(len(layer) for layer in layers) - 1) * row + box_h + 2 * margin
        legend_h, title_h = 0.75, 0.45
        width, height = max(graph_w, 7.0), graph_h + legend_h + title_h
        fig.set_size_inches(width, height)
        ax.set_position((0.0, legend_h / height, 1.0, graph_h / height))
        ax.set_xlim(0, width)  # one data unit is one inch, both ways
        ax.set_ylim(0, graph_h)
        x_offset = (width - graph_w) / 2 + margin + box_w / 2
        for run_id, text in texts.items():
            gx, gy = grid[run_id]
            text.set_position((x_offset + gx * col, graph_h - margin - box_h / 2 - gy * row))
        _draw_edges(ax, lineage, texts, grid)
        focus = nodes[lineage.focus]
        fig.text(
            0.5, 1 - title_h / 2 / height,
            f"Lineage of {_short(focus.name or '(unnamed)', 60)} ({focus.run_id}), "
            f"{lineage.depth} link{'s' if lineage.depth != 1 else ''} deep",
            ha="center", va="center", fontsize=11, gid="title",
        )
        handles: list[Any] = []
        shown = {("EXTERNAL" if n.type == "external" else n.status or "SCHEDULED") for n in nodes.values()}
        for status, (fill, border) in _STATUS_COLOURS.items():
            if status in shown:
                label = "not in this store" if status == "EXTERNAL" else status.lower()
                handles.append(Patch(facecolor=fill, edgecolor=border, label=label))
        for kind in LINK_KINDS:
            if any(e.kind == kind for e in lineage.edges):
                colour, style = _EDGE_STYLES[kind]
                handles.append(Line2D([], [], color=colour, linestyle=style, label=_LINKS[kind][1]))
        handles.append(Patch(facecolor="#ffffff", edgecolor="#000000", linewidth=3.0, label="this run"))
        legend = fig.legend(
            handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False,
            bbox_to_anchor=(0.5, 0.05 / height), fontsize=8,
        )
        legend.set_gid("legend")
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def _draw_edges(ax: Any, lineage: Lineage, texts: dict[str, Any], grid: dict[str, tuple[float, float]]) -> None:
    seen: dict[frozenset[str], int] = {}
    for index, edge in enumerate(lineage.edges):
        pair = frozenset((edge.source, edge.target))
        nth = seen.get(pair, 0)
        seen[pair] = nth + 1
        span = abs(grid[edge.target][0] - grid[edge.source][0])
        # parallel links bow apart; a link across layers or within one bows around boxes
        rad = (0.25 * ((nth + 1) // 2) * (1 if nth % 2 else -1)) if nth else (0.18 if span != 1 else 0.0)
        colour, style = _EDGE_STYLES[edge.kind]
        annotation = ax.annotate(
            "", xy=texts[edge.target].get_position(), xytext=texts[edge.source].get_position(),
            arrowprops={
                "arrowstyle": "-|>,head_length=0.6,head_width=0.3", "color": colour,
                "linestyle": style, "linewidth": 1.4, "shrinkA": 3, "shrinkB": 3,
                "patchA": texts[edge.source].get_bbox_patch(),
                "patchB": texts[edge.target].get_bbox_patch(),
                "connectionstyle": f"arc3,rad={rad}",
            },
        )
        annotation.arrow_patch.set_gid(f"edge-{index}")


def to_svg(lineage: Lineage) -> str:
    """The lineage as a standalone SVG document (tooltips on nodes and arrows, no external references).

    Args:
        lineage: from ``lineage()``.

    Returns:
        The SVG text.
    """
    root = _annotated_svg(lineage, links=False)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + _serialize(root) + "\n"


def _annotated_svg(lineage: Lineage, links: bool) -> Any:
    """matplotlib's SVG with tooltips, classes and ids added; ``links``: nodes link to table rows."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(_figure_svg(lineage))
    for child in list(root):
        if child.tag == f"{{{_SVG_NS}}}metadata":  # matplotlib's RDF block names web addresses
            root.remove(child)
    nodes = {f"node-{n.run_id}": n for n in lineage.nodes}
    edges = {f"edge-{i}": e for i, e in enumerate(lineage.edges)}
    parents = {child: parent for parent in root.iter() for child in parent}
    for group in list(root.iter(f"{{{_SVG_NS}}}g")):
        gid = group.get("id", "")
        title = ET.Element(f"{{{_SVG_NS}}}title")
        if gid in nodes:
            node = nodes[gid]
            title.text = _details(node)
            status = "external" if node.type == "external" else (node.status or "unknown").lower()
            group.set("class", " ".join(["pcs-node", f"status-{status}"] + (["focus"] if node.focus else [])))
            if links and _SAFE_ID.fullmatch(node.run_id):
                parent = parents[group]
                anchor = ET.Element(f"{{{_SVG_NS}}}a", {"href": f"#run-{node.run_id}"})
                parent.insert(list(parent).index(group), anchor)
                parent.remove(group)
                anchor.append(group)
        elif gid in edges:
            edge = edges[gid]
            title.text = f"{edge.label}: {edge.source} \u2192 {edge.target}"
            group.set("class", f"pcs-edge link-{edge.kind}")
        else:
            continue
        group.insert(0, title)
    # ids must be unique in one document and safe in CSS: runs with odd ids get an index
    for i, group in enumerate(root.iter(f"{{{_SVG_NS}}}g")):
        gid = group.get("id", "")
        if gid.startswith("node-") and not _SAFE_ID.fullmatch(gid[5:]):
            group.set("id", f"node-{i}")
    return root


def _serialize(root: Any) -> str:
    import xml.etree.ElementTree as ET

    ET.register_namespace("", _SVG_NS)
    ET.register_namespace("xlink", _XLINK_NS)
    return ET.tostring(root, encoding="unicode")


_PAGE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 1.5rem; color: #212121; background: #fafafa; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
p.summary { margin: 0 0 1rem; color: #555; }
.graph { overflow: auto; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .5rem; }
.graph svg { display: block; margin: 0 auto; }
.graph a { cursor: pointer; }
.graph g.pcs-node:hover path, .graph g.pcs-node:target path { stroke-width: 4; }
table { border-collapse: collapse; margin-top: 1.2rem; font-size: .9rem; background: #fff; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td code { font-size: .85rem; }
tr:target { background: #fff59d; }
tr.focus td { font-weight: bold; }
.swatch { display: inline-block; width: .9em; height: .9em; border: 2px solid; border-radius: 3px;
          vertical-align: -.1em; margin-right: .35em; }
.verdict-reproduced { color: #2e7d32; }
.verdict-diverged { color: #c62828; font-weight: bold; }
.verdict-unverifiable { color: #757575; }
"""


def to_html(lineage: Lineage) -> str:
    """The lineage as one self-contained HTML page: the SVG inline, a table of every run.

    Nothing is loaded from elsewhere (no scripts, stylesheets, fonts or images),
    and the page's content security policy forbids it.

    Args:
        lineage: from ``lineage()``.

    Returns:
        The HTML text.
    """
    svg = _serialize(_annotated_svg(lineage, links=True))
    focus = lineage.node(lineage.focus)
    esc = html.escape
    rows = []
    for node in lineage.nodes:
        fill, border = _colours(node)
        row_id = f' id="run-{node.run_id}"' if _SAFE_ID.fullmatch(node.run_id) else ""
        verdict = node.verdict or ""
        verdict_class = "verdict-" + verdict.split()[0] if verdict else ""
        status = "not in this store" if node.type == "external" else (node.status or "")
        cells = [
            f'<a href="#node-{esc(node.run_id)}"><code>{esc(node.run_id)}</code></a>'
            if row_id else f"<code>{esc(node.run_id)}</code>",
            esc(node.name or ""),
            f'<span class="swatch" style="background:{fill};border-color:{border}"></span>'
            + esc(status) + (" (deleted)" if node.deleted else ""),
            esc(node.type_label),
            f"<code>{esc(node.entry_point)}</code>" if node.entry_point else "",
            esc(node.grade or ""),
            f'<span class="{verdict_class}">{esc(verdict)}</span>' if verdict else "",
            str(node.distance),
        ]
        css = ' class="focus"' if node.focus else ""
        rows.append(f"<tr{row_id}{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    headers = ["run id", "name", "status", "type", "entry point", "grade", "verification", "links away"]
    links = "; ".join(
        f"{sum(1 for e in lineage.edges if e.kind == k)} {_LINKS[k][1]}"
        for k in LINK_KINDS if any(e.kind == k for e in lineage.edges)
    ) or "no links"
    title = f"Lineage of {focus.name or '(unnamed)'} ({focus.run_id})"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        # the page needs nothing from anywhere: forbid it, so a viewer never goes online
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_PAGE_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="summary">{len(lineage.nodes)} runs up to {lineage.depth} links away: '
        f"{esc(links)}. Hover a run for its details; click it to find its row below.</p>",
        f'<div class="graph">{svg}</div>',
        '<table id="runs">',
        "<thead><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr></thead>",
        "<tbody>",
        *rows,
        "</tbody>",
        "</table>",
        "</body>",
        "</html>",
        "",
    ])


# -- writing --------------------------------------------------------------------------------------


def write(lineage: Lineage, path: str | os.PathLike[str]) -> Path:
    """Write the lineage as SVG or HTML, chosen by the file's suffix.

    Args:
        lineage: from ``lineage()``.
        path: where to write: ``*.html`` (a self-contained page) or ``*.svg``.

    Returns:
        The path written.

    Raises:
        ArgumentError: for another suffix, or a folder that does not exist.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".svg":
        return write_svg(lineage, target)
    if suffix in (".html", ".htm"):
        return write_html(lineage, target)
    raise ArgumentError(
        f"Cannot draw a lineage into {str(target)!r}: the file name must end in "
        f"{' or '.join(FORMATS)} (got {suffix or 'no suffix'!r}). Use .html for a page with "
        "a table of every run, or .svg for the picture alone."
    )


def write_svg(lineage: Lineage, path: str | os.PathLike[str]) -> Path:
    """Write the lineage picture as an SVG file (replaced whole, never half-written).

    Args:
        lineage: from ``lineage()``.
        path: the SVG file.

    Returns:
        The path written.
    """
    return _write_text(Path(path), to_svg(lineage))


def write_html(lineage: Lineage, path: str | os.PathLike[str]) -> Path:
    """Write the lineage as one self-contained HTML page (replaced whole, never half-written).

    Args:
        lineage: from ``lineage()``.
        path: the HTML file.

    Returns:
        The path written.
    """
    return _write_text(Path(path), to_html(lineage))


def _write_text(target: Path, text: str) -> Path:
    folder = target.parent
    if not folder.is_dir():
        raise ArgumentError(
            f"Cannot write {target}: the folder {folder} does not exist. Create it first, or "
            "choose a path in an existing folder."
        )
    if target.is_dir():
        raise ArgumentError(f"Cannot write {target}: it is a folder. Give a file name.")
    temp = folder / f".{target.name}.pcs-{os.getpid()}-graph-{secrets.token_hex(4)}"
    try:
        temp.write_text(text, encoding="utf-8")
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    return target
