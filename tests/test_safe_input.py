"""Untrusted input stays small and representable: the safe YAML loader, -a values, limits.

Alias bombs, deep nesting, huge ints, lone surrogates and values MLflow would
cut short are refused up front with one line that names the field.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pcs import _limits, _yaml
from pcs._limits import (
    MAX_DEPTH,
    MAX_DOCUMENT_DEPTH,
    check_metric,
    check_param,
    check_step,
    check_tag,
    check_value,
)
from pcs._yaml import load_json, load_yaml, parse_value
from pcs.errors import ArgumentError, InputLimitError, RegistryError, UnserializableArgumentError
from pcs.specs import canonical_json, dump_yaml, to_recordable

REPO_ROOT = Path(__file__).resolve().parent.parent


def alias_bomb(levels: int = 40, fanout: int = 9, flow: bool = False) -> str:
    """A "billion laughs" document: each level lists the previous one ``fanout`` times."""
    if flow:
        parts = ["&l0 [" + ", ".join(["lol"] * fanout) + "]"]
        parts += [
            f"&l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]" for i in range(1, levels)
        ]
        return "[" + ", ".join(parts) + "]"
    lines = ["  l0: &l0 [" + ", ".join(["lol"] * fanout) + "]"]
    lines += [
        f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]" for i in range(1, levels)
    ]
    return "bomb:\n" + "\n".join(lines) + "\n"


def bomb_registry() -> str:
    """A registry file (the shape of a bundle's registry.yaml) carrying an alias bomb."""
    body = textwrap.indent(alias_bomb(), "      ")
    return (
        "pcs_format: 1\nrepos:\n  r: {type: local, path: .}\ncomponents:\n  c:\n"
        "    repo: r\n    file_path: c.py\n    extra:\n" + body
    )


def normal_registry() -> str:
    """An ordinary registry of about the same size as ``bomb_registry()``."""
    components = {
        f"component_{i}": {
            "repo": "r",
            "file_path": f"agents/component_{i}.py",
            "class_name": f"Component{i}",
            "instantiate": True,
            "dependencies": {f"dep_{j}": f"component_{j}" for j in range(i % 4)},
        }
        for i in range(17)
    }
    return dump_yaml({"pcs_format": 1, "repos": {"r": {"type": "local", "path": "."}},
                      "components": components})


def test_the_bomb_and_the_normal_registry_are_the_sizes_the_issue_names():
    assert 2_700 <= len(bomb_registry()) <= 3_300
    assert 2_700 <= len(normal_registry()) <= 3_300


# -- alias bombs -------------------------------------------------------------------------


@pytest.mark.parametrize("flow", [False, True])
def test_alias_bomb_is_refused_in_one_line(flow):
    text = alias_bomb(flow=flow)
    with pytest.raises(InputLimitError, match="alias bomb") as caught:
        load_yaml(text, "Registry file x.yaml", RegistryError)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400 and "lol" not in message
    assert message.startswith("Registry file x.yaml")


def test_a_small_bomb_is_refused_by_expansion_not_by_size():
    # nine levels of nine: 460 bytes that expand to 387 million nodes
    text = alias_bomb(levels=9)
    assert len(text) < 600
    with pytest.raises(InputLimitError, match="times over"):
        load_yaml(text, "doc")


MEASURE = r"""
import json, sys, time
kind, path = sys.argv[1], sys.argv[2]
from pcs.errors import InputLimitError
start = time.perf_counter()
try:
    # load, then walk the result the way a command does (hashing, writing): that walk is
    # where an alias bomb that got through would expand
    if kind == "registry":
        from pcs.registry import InMemoryRegistry
        json.dumps(InMemoryRegistry.from_yaml(path).to_dict())
    elif kind == "arg_set":
        from pcs.argument_set import ArgumentSet
        ArgumentSet.from_yaml(path).identifier
    else:
        from pcs._yaml import parse_value
        json.dumps(parse_value(open(path, encoding="utf-8").read(), "argument a.f.x"))
    outcome = "loaded"
except InputLimitError as exc:
    outcome = "refused: " + str(exc)
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - start}))
"""


def _cap_memory() -> None:
    # a regression must fail the test, not swap the machine: 2 GiB of address space
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))


def measure_child(kind: str, path: Path, scratch: Path) -> tuple[str, int]:
    """(outcome, peak RSS in KiB) of loading ``path`` in a fresh Python process.

    ``os.wait4`` gives this one child's resource usage; RUSAGE_CHILDREN would be
    the largest of every child this test process ever had.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    out_path = scratch / f"{path.stem}.out"
    with open(out_path, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", MEASURE, kind, str(path)],
            stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_cap_memory,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text()
    assert child.returncode == 0, text
    return json.loads(text.splitlines()[-1])["outcome"], usage.ru_maxrss


def bomb_arg_set() -> str:
    return "agent:\n  run:\n    x:\n" + textwrap.indent(alias_bomb(), "      ")


def normal_arg_set() -> str:
    """AgentOS style: shared defaults merged into each component's arguments."""
    shared = "".join(f"    option_{i}: {i / 7:.5f}\n" for i in range(12))
    parts = ["defaults:\n  shared: &shared\n" + shared]
    for c in range(24):
        parts.append(
            f"component_{c}:\n  __init__:\n    <<: *shared\n    own_{c}: {c}\n"
            f"  learn:\n    num_episodes: {10 * c}\n    tags: [a, b, c]\n"
        )
    return "".join(parts)


def normal_value() -> str:
    return json.dumps([{"name": f"layer_{i}", "units": 64 * i, "dropout": 0.1} for i in range(48)])


INPUTS = {
    "registry": (bomb_registry, normal_registry),
    "arg_set": (bomb_arg_set, normal_arg_set),
    "value": (lambda: alias_bomb(flow=True), normal_value),
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_alias_bomb_costs_no_more_memory_than_a_normal_input(kind, tmp_path):
    make_bomb, make_normal = INPUTS[kind]
    bomb, normal = tmp_path / "bomb.yaml", tmp_path / "normal.yaml"
    bomb.write_text(make_bomb(), encoding="utf-8")
    normal.write_text(make_normal(), encoding="utf-8")
    assert 2_000 <= bomb.stat().st_size <= 3_300 and 2_000 <= normal.stat().st_size <= 3_300
    bomb_outcome, bomb_peak = measure_child(kind, bomb, tmp_path)
    normal_outcome, normal_peak = measure_child(kind, normal, tmp_path)
    assert bomb_outcome.startswith("refused: ") and "alias bomb" in bomb_outcome
    assert normal_outcome == "loaded"
    assert bomb_peak < normal_peak + 50 * 1024  # KiB


def test_ordinary_anchors_and_merge_keys_keep_working():
    text = textwrap.dedent(
        """
        defaults: &defaults {discount: 0.99, batch_size: 32, layers: [64, 64]}
        agent:
          __init__:
            <<: *defaults
            batch_size: 10
        policy:
          __init__: *defaults
        many: [*defaults, *defaults, *defaults, *defaults, *defaults, *defaults]
        """
    )
    data = load_yaml(text, "doc")
    assert data["agent"]["__init__"] == {"discount": 0.99, "batch_size": 10, "layers": [64, 64]}
    assert data["policy"]["__init__"]["layers"] == [64, 64]
    assert len(data["many"]) == 6
    # what pcs writes never uses aliases, so it never counts against the limit
    assert "&" not in dump_yaml({"a": data["many"], "b": data["many"]})


def test_a_recursive_alias_is_refused():
    with pytest.raises(ArgumentError, match="refers to a node containing it") as caught:
        load_yaml("a: &a [1, *a]\n", "doc")
    assert not isinstance(caught.value, InputLimitError)


# -- size, depth, numbers, text ----------------------------------------------------------


def test_documents_larger_than_the_limit_are_refused():
    with pytest.raises(InputLimitError, match="more than the 100 bytes"):
        load_yaml("x: " + "a" * 200, "doc", max_bytes=100)
    with pytest.raises(InputLimitError, match="is 123 bytes, more than the 100 bytes"):
        load_yaml("x: " + "é" * 60, "doc", max_bytes=100)  # 63 characters, 123 bytes
    with pytest.raises(InputLimitError, match="is 101 bytes"):
        load_yaml(b"x: " + b"a" * 98, "doc", max_bytes=100)
    assert load_yaml("x: " + "a" * 90, "doc", max_bytes=100) == {"x": "a" * 90}


@pytest.mark.parametrize("depth", [MAX_DOCUMENT_DEPTH + 1, 3000, 200_000])
def test_deep_yaml_is_refused_without_recursion_errors(depth):
    flow = "[" * depth + "]" * depth
    with pytest.raises(InputLimitError, match=f"more than {MAX_DOCUMENT_DEPTH} levels"):
        load_yaml(flow, "doc")
    assert load_yaml("[" * MAX_DOCUMENT_DEPTH + "]" * MAX_DOCUMENT_DEPTH, "doc") is not None


def test_deep_block_yaml_and_deep_aliases_are_refused():
    block = "\n".join("  " * i + f"k{i}:" for i in range(MAX_DOCUMENT_DEPTH + 5)) + " 1\n"
    with pytest.raises(InputLimitError, match="levels deep"):
        load_yaml(block, "doc")
    # shallow anchors that nest deep only once aliased into each other
    inner = "k: &k " + "[" * 100 + "1" + "]" * 100 + "\n"
    with pytest.raises(InputLimitError, match="levels deep"):
        load_yaml(inner + "a: " + "[" * 40 + "*k" + "]" * 40 + "\n", "doc")


def test_ints_beyond_64_bits_and_lone_surrogates_are_refused_naming_the_field():
    with pytest.raises(InputLimitError, match=r"at agent\.__init__\.n, has an int of 5000"):
        load_yaml("agent:\n  __init__:\n    n: " + "7" * 5000 + "\n", "doc")
    with pytest.raises(InputLimitError, match=r"at xs\[1\], is an int of 65 bits"):
        load_yaml(f"xs: [1, {2**64}]", "doc")
    assert load_yaml(f"xs: [{2**64 - 1}, {-(2**64 - 1)}]", "doc") == {
        "xs": [2**64 - 1, -(2**64 - 1)]
    }
    with pytest.raises(InputLimitError, match="lone surrogate"):
        load_yaml("x: caf\udce9\n", "doc")


def test_yaml_syntax_and_unsafe_tags_raise_the_callers_class_in_one_line():
    cases = ["x: [", "a: 1\n---\nb: 2\n", "x: !!python/object/apply:os.system [ls]",
             "x: 2024-13-45", "a: *nowhere"]
    for text in cases:
        with pytest.raises(RegistryError) as caught:
            load_yaml(text, "Registry file r.yaml", RegistryError)
        assert "\n" not in str(caught.value), text
        assert not isinstance(caught.value, InputLimitError)


def test_the_pure_python_loader_gives_the_same_results():
    # what runs where libyaml is not installed
    good = "defaults: &d {a: 1}\nx:\n  <<: *d\n  b: [1, 2.5, yes, null, '5']\n"
    assert _yaml._load(good, "doc", ArgumentError, 10**6, 128, None, _yaml._PureLoader) == (
        load_yaml(good, "doc")
    )
    for bad, match in [
        (alias_bomb(levels=9), "alias bomb"),
        ("[" * 3000 + "]" * 3000, "levels deep"),
        ("[" * 200 + "]" * 200, "levels deep"),
        (f"x: {2**70}", "65 bits|71 bits"),
    ]:
        with pytest.raises(InputLimitError, match=match):
            _yaml._load(bad, "doc", ArgumentError, 10**6, 128, None, _yaml._PureLoader)


# -- -a values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5", 5), ("-3", -3), ("0.5", 0.5), ("1e-3", 0.001), ("2E5", 200000.0),
        ("true", True), ("null", None), ("abc", "abc"), ("'5'", "5"), ('"x"', "x"),
        ("[1, 2]", [1, 2]), ("{a: 1}", {"a": 1}), ("[1e-3, x, yes]", [0.001, "x", True]),
        ("no", False), ("yes", True), ("'no'", "no"), ("012", 10), ("/tmp/x=y", "/tmp/x=y"),
        ("", ""), (str(2**64 - 1), 2**64 - 1),
    ],
)
def test_parse_value_reads_yaml_with_json_numbers(text, expected):
    # YAML as documented (and as --arg-set files read it), JSON numbers stay numbers
    assert parse_value(text, "argument a.f.x") == expected


def test_malformed_yaml_value_is_refused_with_advice_to_quote():
    with pytest.raises(ArgumentError, match="Quote the value"):
        parse_value("[draft", "argument a.f.x")


@pytest.mark.parametrize(
    "text, match",
    [
        (alias_bomb(levels=12, flow=True), "alias bomb"),
        ("7" * 5000, "int of 5000 digits"),
        (str(2**64), "65 bits"),
        ("1e400", "beyond the largest float"),
        ("[" * 3000 + "]" * 3000, f"more than {MAX_DEPTH} levels"),
        ("{a: " * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "levels deep"),
        ("caf\udce9", "lone surrogate"),
        ('"\\ud800"', "lone surrogate"),
        ("[1, " + "9" * 30 + "]", "bits"),
    ],
)
def test_parse_value_refuses_what_cannot_be_recorded_naming_the_argument(text, match):
    with pytest.raises(InputLimitError, match=match) as caught:
        parse_value(text, "argument agent.run.x")
    assert str(caught.value).startswith("Argument agent.run.x")
    assert "\n" not in str(caught.value)


def test_a_222_character_alias_bomb_value_is_refused_quickly():
    levels = ["&a [" + ",".join("x" * 9) + "]"] + [
        f"&{b} [" + ",".join([f"*{a}"] * 9) + "]" for a, b in zip("abcdef", "bcdefg", strict=True)
    ]
    text = "[" + ",".join(levels) + "]"  # 9**7 = 4.8 million items once expanded
    assert len(text) <= 222
    with pytest.raises(InputLimitError, match="alias bomb"):
        parse_value(text, "argument a.f.x")


# -- Python values: arguments and return values -----------------------------------------


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_to_recordable_refuses_deep_values_and_cycles_in_one_line():
    with pytest.raises(InputLimitError, match=f"more than {MAX_DEPTH} levels") as caught:
        to_recordable({"x": nested(3000)}, "argument agent.run")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 500
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(InputLimitError, match="contains itself"):
        to_recordable(cycle, "the return value")
    assert to_recordable(nested(MAX_DEPTH), "v") == nested(MAX_DEPTH)


def test_to_recordable_refuses_huge_ints_and_lone_surrogates_naming_the_field():
    with pytest.raises(InputLimitError, match=r"Argument agent.run\['n'\] is an int of 16610 bits"):
        to_recordable({"n": 10**5000}, "argument agent.run")
    with pytest.raises(InputLimitError, match=r"\['s'\] holds a lone surrogate \(U\+D800"):
        to_recordable({"s": "a\ud800"}, "argument agent.run")
    with pytest.raises(InputLimitError, match="A key of argument agent.run holds a lone"):
        to_recordable({"k\udcff": 1}, "argument agent.run")
    with pytest.raises(UnserializableArgumentError, match="JSON cannot record"):
        to_recordable({"x": math.nan}, "argument agent.run")
    assert to_recordable({"n": 2**64 - 1, "t": (1, "é")}, "v") == {"n": 2**64 - 1, "t": [1, "é"]}


def test_specs_hold_values_at_full_depth():
    # a run command spec wraps its arguments a few levels down
    spec = {"run_command": {"argument_set": {"args": {"agent": {"run": {"x": nested(MAX_DEPTH - 1)}}}}}}
    assert canonical_json(spec).startswith('{"run_command"')


def test_check_value_walks_without_recursion():
    check_value({"a": [1, "x", {"b": 2**64 - 1}]}, "v")
    with pytest.raises(InputLimitError, match="levels deep"):
        check_value(nested(100_000), "v")
    with pytest.raises(InputLimitError, match=r"V\['a'\]\[1\] is an int of 65 bits"):
        check_value({"a": [0, 2**64]}, "v")


# -- MLflow: metrics, params, tags -------------------------------------------------------


def test_metrics_must_be_floats_with_int64_steps():
    with pytest.raises(InputLimitError, match=r"Metric 'loss' is an int of 1329 bits.*larger than any float"):
        check_metric("loss", 10**400)
    with pytest.raises(InputLimitError, match=r"Metric 'loss' has step 1180591620717411303424, outside"):
        check_metric("loss", 0.5, step=2**70)
    with pytest.raises(InputLimitError, match="Metric 'loss' is 'high'"):
        check_metric("loss", "high")
    with pytest.raises(InputLimitError, match="not a whole number"):
        check_metric("loss", 1.0, step=1.5)
    assert math.isnan(check_metric("loss", math.nan))
    assert check_metric("loss", -math.inf) == -math.inf
    assert check_metric("loss", 10**300, step=2**63 - 1) == 1e300
    assert check_step(-(2**63), "Metric 'x'") == -(2**63)
    assert check_step(3.0, "Metric 'x'") == 3
    import numpy as np

    assert check_metric("acc", np.float32(0.25), step=np.int64(7)) == 0.25


def test_metric_param_and_tag_names_follow_mlflows_rules():
    for bad in ["a/../b", "/abs", "", "bad\nname", "x" * 251]:
        with pytest.raises(InputLimitError, match="Metric name"):
            check_metric(bad, 1.0)
    with pytest.raises(InputLimitError, match="Param name"):
        check_param("semi;colon", 1)
    assert check_tag("mlflow.note.content", "ok") == "ok"


def test_params_and_tags_over_mlflows_limits_are_refused_not_truncated():
    assert _limits.param_value_limit() == 6000 and _limits.tag_value_limit() == 8000
    assert check_param("lr", 0.001) == "0.001"
    assert check_param("text", "p" * 6000) == "p" * 6000
    with pytest.raises(InputLimitError, match="Param 'text' is 6001 characters long; MLflow keeps"):
        check_param("text", "p" * 6001)
    with pytest.raises(InputLimitError, match=r"Tag 'note' is 10485760 characters long.*8000") as caught:
        check_tag("note", "t" * 10 * 1024 * 1024)
    assert len(str(caught.value)) < 400
    with pytest.raises(InputLimitError, match="Tag 'note' holds a lone surrogate"):
        check_tag("note", "\udcff")
    with pytest.raises(InputLimitError, match="Param 'n' is an int of 16610 bits"):
        check_param("n", 10**5000)


# -- JSON from outside (the registry server's request bodies, stored artifacts) --------


def test_load_json_applies_the_same_limits():
    assert load_json('{"a": [1, 2.5, "x", null]}', "The request body") == {"a": [1, 2.5, "x", None]}
    cases = [
        ("[" * 5000 + "]" * 5000, "levels deep"),
        ("[" * (MAX_DOCUMENT_DEPTH + 1) + "]" * (MAX_DOCUMENT_DEPTH + 1), "levels deep"),
        ("9" * 5000, "more than 4300 digits"),
        (json.dumps({"n": 2**64}), r"The request body\['n'\] is an int of 65 bits"),
        ('["\\ud800"]', "lone surrogate"),
        ("[1e400]", "beyond the largest float"),
        ("x" * 200, "more than the 100 bytes"),
    ]
    for text, match in cases:
        with pytest.raises(InputLimitError, match=match):
            load_json(text, "The request body", RegistryError, max_bytes=100 if len(text) == 200 else 10**6)
    for text, match in [("{a", "is not valid JSON"), ('{"a": NaN}', "holds NaN"), (b"\xff", "not UTF-8")]:
        with pytest.raises(RegistryError, match=match) as caught:
            load_json(text, "The request body", RegistryError, allow_nan=False)
        assert not isinstance(caught.value, InputLimitError)
    assert math.isnan(load_json("NaN", "v"))


def test_an_alias_bomb_inside_a_bundle_artifact_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, template_store
):
    import hashlib

    from conftest import make_store

    from pcs import BundleError, Component, Run
    from pcs.transfer import export_bundle, import_bundle

    class Tiny:
        def go(self):
            return 1

    run = Component.from_class(Tiny, instantiate=True).run_with_arg_set("go", {}, seed=1)
    bundle = export_bundle([run.identifier], tmp_path / "bundle").path
    record = bundle / "artifacts" / run.identifier / "pcs" / "run_command.yaml"
    bomb = alias_bomb().encode()
    record.write_bytes(bomb)
    registry = bundle / "registry.yaml"
    text = registry.read_text(encoding="utf-8")
    import yaml

    data = yaml.safe_load(text)
    data["runs"][run.identifier]["artifacts"]["pcs/run_command.yaml"] = hashlib.sha256(bomb).hexdigest()
    registry.write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(tmp_path / "elsewhere", template_store))

    with pytest.raises(BundleError, match="alias"):
        import_bundle(bundle)
    assert Run.get_all_runs() == []  # nothing written


def test_dump_yaml_writes_what_pyyamls_safe_dumper_writes():
    # dump_yaml shortcuts PyYAML's representer and resolver for speed: same text, including
    # strings that read as other types (quoted) and keys that cannot be sorted
    import random
    import string

    import yaml

    class Plain(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
        def ignore_aliases(self, data):
            return True

    rng = random.Random(3)
    atoms = ["", "yes", "No", "true", "null", "~", "1", "1.5", "0x1f", "1e3", ".inf", "-", "a: b", "#x",
             "x #y", "'q'", '"d"', "2020-01-01", "12:30:00", "é", "line\nbreak", " lead", "trail ", "*a",
             "&b", "!t", "%p", "@a", "=", "<<", "0o7", "+1", "-.5", "On", "y", "x" * 300]

    def value(depth=0):
        r = rng.random()
        if depth < 4 and r < 0.2:
            return {rng.choice(atoms + [1, None, 2.5]): value(depth + 1) for _ in range(rng.randrange(4))}
        if depth < 4 and r < 0.3:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        if r < 0.4:
            return rng.choice([None, True, False, 0, -3, 2.5, math.inf, 10**20])
        if r < 0.7:
            return rng.choice(atoms)
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(12)))

    for _ in range(400):
        data = value()
        for sort_keys in (False, True):
            expected = yaml.dump(data, Dumper=Plain, sort_keys=sort_keys, allow_unicode=False)
            assert dump_yaml(data, sort_keys=sort_keys) == expected
            assert dump_yaml(data, sort_keys=sort_keys) == expected  # answered from the cache


def test_dump_yaml_remembers_texts_by_content_never_by_identity():
    """dump_yaml remembers its last texts; data equal in repr only share a text, so values of
    other types, a dict changed in place and key order each get their own."""
    import yaml

    variants = [{"a": 1}, {"a": "1"}, {"a": 1.0}, {"a": True}, {"a": [1]}, {"a": None}, {1: "a"}]
    texts = [dump_yaml(v) for v in variants]
    assert len(set(texts)) == len(variants)
    assert [yaml.safe_load(t) for t in texts] == variants
    record = {"b": 2, "a": 1}
    first = dump_yaml(record)
    record["a"] = 3  # the same object, changed
    assert dump_yaml(record) == "b: 2\na: 3\n" and first == "b: 2\na: 1\n"
    assert dump_yaml(record, sort_keys=True) == "a: 3\nb: 2\n"
    assert dump_yaml({"a": 3, "b": 2}) == "a: 3\nb: 2\n"  # equal dicts, other order: other text

    class Number(float):  # a float subclass (numpy's float64 is one): its repr looks plain
        pass

    assert dump_yaml({"x": 1.5}) == "x: 1.5\n"
    with pytest.raises(yaml.representer.RepresenterError):  # refused as without the memory
        dump_yaml({"x": Number(1.5)})
