"""The record's seams: pcs.record works from plain facts the run core hands it, and never calls back.

These are in-process unit tests of the package the next work on issue 17
extends (closure, data reads, environment variables, inputs from other runs);
the runs themselves are tested through ``Component`` everywhere else.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
from pathlib import Path

import yaml

from pcs import _keys
from pcs.record import Facts, Part, Record, closure
from pcs.repo import LocalRepo
from pcs.specs import sha256_bytes

PCS = Path(__file__).resolve().parent.parent / "pcs"
ABOVE_THE_RECORD = (
    "pcs.run", "pcs.component", "pcs.run_command", "pcs.component_run", "pcs.verification",
    "pcs.sweep", "pcs.transfer", "pcs.isolated", "pcs.freeze", "pcs.graph", "pcs.cleanup",
    "pcs._render", "pcs.cli",
)


def _part(root: Path, file: str = "agent.py") -> Part:
    repo = LocalRepo("here", root)
    local = repo.local_file(file)
    return Part(
        key="agent", name="agent", repo=repo, file_path=file, version=None, snapshot=None,
        recorded=None, legacy=None, live_root=repo.local_dir, local_file=local,
        requirements_path=None, source=lambda: local.read_text(encoding="utf-8"),
        requirements=lambda: None, problems=list,
    )


def _project(root: Path) -> tuple[Part, dict[str, dict[str, str]], dict[str, str]]:
    """A component file that imports a helper next to it; its part, code map and sources."""
    text = "from helpers import step\n\ndef run():\n    return step()\n"
    (root / "agent.py").write_text(text, encoding="utf-8")
    (root / "helpers.py").write_text("def step():\n    return 1\n", encoding="utf-8")
    digest = sha256_bytes(text.encode("utf-8"))
    return _part(root), {"agent": {"file": "here:agent.py", "sha256": digest}}, {digest: text}


def test_the_record_imports_nothing_above_it_not_even_for_type_hints():
    found = []
    for path in sorted((PCS / "record").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            found += [f"{path.name}: {n}" for n in names
                      if any(n == m or n.startswith(m + ".") for m in ABOVE_THE_RECORD)]
    assert found == []


def test_a_session_built_from_parts_pins_the_closure_into_a_code_map(tmp_path):
    part, code, sources = _project(tmp_path)
    session = closure.session_for([part])
    try:
        with session:
            session.scan(closure.component_texts(code, sources))
    finally:
        session.close()
    assert closure.absorb(session, code, sources, {"agent": "here"})
    helper = (tmp_path / "helpers.py").read_text(encoding="utf-8")
    digest = sha256_bytes(helper.encode("utf-8"))
    entry = {"component": "agent", "module": "helpers", "path": "helpers.py",
             "file": "here:helpers.py", "sha256": digest}
    assert code["agent:helpers"] == entry and sources[digest] == helper
    assert closure.module_entries(code, "agent") == {"agent:helpers": entry}
    assert closure.closures(code, sources, ["agent"])["agent"] == (
        [closure.ModuleFile("helpers", "helpers.py", digest)], {digest: helper}
    )
    assert not closure.absorb(session, code, sources, {"agent": "here"})  # nothing new


def test_a_record_is_staged_from_facts_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("PCS_DATA_SNAPSHOT_MAX_BYTES", "2")  # layout.txt is too large to keep
    part, code, sources = _project(tmp_path)
    (tmp_path / "layout.txt").write_text("#..#\n", encoding="utf-8")
    facts = Facts(
        identifier="c0ffee", entry_point="run", seed=7, parts=[part], code=code, sources=sources,
        imports=set(), closure_problems=[], recorded_code=None,
        registry_text=lambda: "run_commands: {}\n",
    )
    record = Record.start(facts)
    staged = sorted(p.relative_to(record.folder).as_posix()
                    for p in record.folder.rglob("*") if p.is_file())
    assert staged == ["pcs/code.yaml", "pcs/code/agent.py", "pcs/environment.yaml",
                      "pcs/run_command.yaml"]
    assert record.tags[_keys.RUN_COMMAND_ID] == "c0ffee" and record.tags[_keys.SEED] == "7"
    assert record.tags[_keys.COMPONENT] == "agent" and record.tags[_keys.GRADE] == "portable"
    code_yaml = yaml.safe_load((record.folder / _keys.CODE_ARTIFACT).read_text(encoding="utf-8"))
    assert code_yaml["components"]["agent"]["local_path"] == str(tmp_path.resolve() / "agent.py")

    with record.watching():
        drawn = random.random()
        (tmp_path / "layout.txt").read_text(encoding="utf-8")
    assert drawn == random.Random(7).random()

    end, tags = record.end_folder(), {}
    record.end(end, Facts(**{**vars(facts), "imports": {"yaml", "json"}}), False, tags)
    assert sorted(p.name for p in end.iterdir()) == ["environment_used.yaml", "imports.yaml", "inputs.yaml"]
    inputs = yaml.safe_load((end / "inputs.yaml").read_text(encoding="utf-8"))
    assert inputs["data"] == {"agent": {"layout.txt": {
        "sha256": hashlib.sha256(b"#..#\n").hexdigest(), "size": 5, "snapshot": False}}}
    assert yaml.safe_load((end / "imports.yaml").read_text(encoding="utf-8"))["modules"] == ["yaml"]
    assert record.imports == ["yaml"]
    assert tags[_keys.GRADE] == "local" and "layout.txt" in json.loads(tags[_keys.GRADE_REASONS])[0]
    assert tags[_keys.ENVIRONMENT_FINGERPRINT]
    record.cleanup()
    assert not record.folder.exists()
