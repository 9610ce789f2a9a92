"""Argument-set files: safe YAML, anchor-only sections, and values no store can hold."""

from __future__ import annotations

import logging
import textwrap

import pytest

import pcs.argument_set
from pcs import ArgumentSet, Component
from pcs._limits import MAX_DEPTH
from pcs.errors import ArgumentError, InputLimitError

# the shape of AgentOS's acme arguments.yaml: a section that only holds an anchor,
# merged into the real sections
ANCHOR_ONLY = """\
common:
  settings: &settings
    gamma: 0.97
    batch_size: 16
agent:
  __init__:
    <<: *settings
    batch_size: 8
  learn:
    num_episodes: 20
env:
  __init__:
    <<: *settings
"""


def write(tmp_path, text, name="args.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_an_anchor_only_section_warns_once_and_loads(tmp_path, caplog):
    path = write(tmp_path, ANCHOR_ONLY)
    with caplog.at_level(logging.WARNING, logger="pcs"):
        arg_set = ArgumentSet.from_yaml(path)
    warnings = [r for r in caplog.records if r.name == "pcs"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "'common'" in message and "names no component" in message and "\n" not in message
    assert arg_set.anchor_sections == ("common",)
    assert arg_set.component_names() == ["agent", "env"]
    assert arg_set.get_function_args("agent", "__init__") == {"gamma": 0.97, "batch_size": 8}
    assert arg_set.get_function_args("env", "__init__") == {"gamma": 0.97, "batch_size": 16}
    # the dropped section is no part of the content
    assert arg_set == ArgumentSet(arg_set.to_dict())
    assert ArgumentSet(arg_set.to_dict()).anchor_sections == ()


def test_anchor_only_sections_of_other_shapes(tmp_path, caplog):
    # a section that is itself merged elsewhere, and a list of anchors
    path = write(tmp_path, """\
        base: &base {gamma: 0.9}
        anchors: [&a {lr: 0.1}, &b {lr: 0.2}]
        agent:
          __init__: {<<: *base}
          learn: *a
          evaluate: *b
        """)
    with caplog.at_level(logging.WARNING, logger="pcs"):
        arg_set = ArgumentSet.from_yaml(path)
    assert arg_set.anchor_sections == ("base", "anchors")
    assert arg_set.to_dict() == {
        "agent": {"__init__": {"gamma": 0.9}, "learn": {"lr": 0.1}, "evaluate": {"lr": 0.2}}
    }


def test_component_sections_that_share_anchors_are_kept(tmp_path, caplog):
    # both sections name components: one defines the anchor its sibling reuses
    path = write(tmp_path, """\
        env:
          __init__: &env_args {size: 5}
        env_copy:
          __init__: *env_args
        agent:
          learn: {n: 1}
        """)
    with caplog.at_level(logging.WARNING, logger="pcs"):
        arg_set = ArgumentSet.from_yaml(path)
    assert not [r for r in caplog.records if r.name == "pcs"]
    assert arg_set.anchor_sections == ()
    assert arg_set.component_names() == ["agent", "env", "env_copy"]
    assert arg_set.get_function_args("env_copy", "__init__") == {"size": 5}


def test_other_unknown_sections_are_kept_and_refused_when_the_run_is_created(tmp_path):
    (tmp_path / "agent.py").write_text("class Agent:\n    def learn(self, n=1):\n        return n\n")
    (tmp_path / "components.yaml").write_text(
        "repos: {here: {type: local, path: .}}\n"
        "components: {agent: {repo: here, file_path: agent.py, class_name: Agent, instantiate: true}}\n"
    )
    path = write(tmp_path, "agent:\n  learn: {n: 2}\nagnet:\n  learn: {n: 3}\n")
    arg_set = ArgumentSet.from_yaml(path)
    assert arg_set.component_names() == ["agent", "agnet"]
    agent = Component.from_registry_file(tmp_path / "components.yaml", "agent")
    with pytest.raises(ArgumentError, match="agnet"):
        agent.check_argument_names(arg_set)


def test_argument_files_are_read_safely(tmp_path, monkeypatch):
    bomb = "x0: &x0 [a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]\n" for i in range(1, 12)
    )
    path = write(tmp_path, "agent:\n  learn:\n    data:\n" + textwrap.indent(bomb, "      "))
    with pytest.raises(InputLimitError, match="alias bomb") as caught:
        ArgumentSet.from_yaml(path)
    assert str(caught.value).startswith(f"Argument set file {path}")
    path = write(tmp_path, "agent:\n  learn:\n    n: " + "9" * 5000 + "\n")
    with pytest.raises(InputLimitError, match=r"at agent\.learn\.n, has an int of 5000 characters"):
        ArgumentSet.from_yaml(path)
    path = write(tmp_path, "agent:\n  learn: {n: [1, 2}\n")
    with pytest.raises(ArgumentError, match="is not valid YAML: .*line 2") as caught:
        ArgumentSet.from_yaml(path)
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(pcs.argument_set, "MAX_YAML_BYTES", 10)
    with pytest.raises(InputLimitError, match="more than the 10 bytes"):
        ArgumentSet.from_yaml(path)


def deep(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value, match",
    [
        (deep(3000), f"more than {MAX_DEPTH} levels deep"),
        (10**5000, "is an int of 16610 bits"),
        (2**64, "is an int of 65 bits"),
        ("caf\udce9", "lone surrogate"),
    ],
    ids=["3000-deep", "5000-digit-int", "2**64", "lone-surrogate"],
)
def test_argument_values_no_store_can_hold_are_refused_naming_the_argument(value, match):
    with pytest.raises(InputLimitError, match=match) as caught:
        ArgumentSet({"agent": {"learn": {"x": value}}})
    message = str(caught.value)
    assert message.startswith("Argument agent.learn['x']") and "\n" not in message
    assert len(message) < 600
