"""Dependencies point one way: cli -> features -> run core -> record -> foundations -> base.

Every import of a pcs module inside pcs (at the top of a module or inside a
function) is read from the source, so a function-local import that dodges a
cycle is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PCS = Path(__file__).resolve().parent.parent / "pcs"

# lowest layer first; a module may import modules of its own layer or lower ones
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {
        "pcs._keys", "pcs.errors", "pcs._version", "pcs._limits", "pcs._yaml", "pcs._redact",
        "pcs.specs", "pcs._config", "pcs._features", "pcs._liveness", "pcs._signals",
        "pcs.progress", "pcs._archive", "pcs._writer", "pcs.exceptions", "pcs.secrets", "pcs._disk",
    }),
    ("foundations", {
        "pcs.repo", "pcs.registry", "pcs.argument_set", "pcs.cache", "pcs.web_registry",
        "pcs._capture",
    }),
    # what a component run records about its inputs: called by the run core, never calling it
    ("record", {"pcs.record"}),
    ("run core", {
        "pcs.run", "pcs.component", "pcs.run_command", "pcs.component_run",
    }),
    ("features", {
        "pcs.verification", "pcs.transfer", "pcs.isolated", "pcs.freeze", "pcs._render",
        "pcs.graph", "pcs.cleanup", "pcs.sweep", "pcs.browse", "pcs.script",
    }),
    ("cli", {"pcs.cli", "pcs", "pcs.__main__"}),
]
CORE = [name for name, _ in LAYERS].index("run core")
# within the run core, the order is fixed too (run knows nothing of components)
CORE_ORDER = ["pcs.run", "pcs.component", "pcs.run_command", "pcs.component_run"]
# a re-export under an AgentOS name: pcs.registry.WebRegistry (loaded on first use)
ALLOWED = {("pcs.registry", "pcs.web_registry")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PCS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer_of(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or module.startswith(member + "."):
                return index
    return None


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (imports for type hints only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pcs"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pcs"):
            if node.module == "pcs":
                found.update(f"pcs.{a.name}" if _layer_of(f"pcs.{a.name}") is not None else "pcs"
                             for a in node.names)
            else:
                found.add(node.module)
    return found


def _core_rank(module: str) -> int | None:
    for i, name in enumerate(CORE_ORDER):
        if module == name:
            return i
    return None


def test_every_module_has_a_layer():
    missing = [m for m in (_module_name(p) for p in PCS.rglob("*.py")) if _layer_of(m) is None]
    assert missing == [], f"give these modules a layer in tests/test_layering.py: {missing}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PCS.rglob("*.py")):
        module = _module_name(path)
        own = _layer_of(module)
        for target in sorted(_imports(path)):
            layer = _layer_of(target)
            if layer is None or (module, target) in ALLOWED:
                continue
            if layer > own:
                upward.append(f"{module} ({LAYERS[own][0]}) imports {target} ({LAYERS[layer][0]})")
            elif layer == own == CORE:
                a, b = _core_rank(module), _core_rank(target)
                if a is not None and b is not None and b > a:
                    upward.append(f"{module} imports {target}, later in the run core")
    assert upward == []


def test_the_core_reaches_features_only_by_name():
    import pcs  # noqa: F401  (imports every feature, which registers itself)
    from pcs import _features

    for name in ("export_runs", "import_run", "compare_runs", "rerun_in_recorded_env",
                 "print_run_status", "print_runs_table", "print_component_tree",
                 "versioned_component", "frozen_registry"):
        assert callable(_features.feature(name)), name
