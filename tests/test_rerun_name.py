"""A rerun is named after its original (issue 20.5: reruns keep the original's name with a suffix)."""

from __future__ import annotations

from conftest import component_from_source

ADDER = """
class Adder:
    def add(self, x=1):
        return x + 1
"""


def test_a_rerun_keeps_the_originals_name_with_a_suffix_unless_named(tmp_path):
    adder = component_from_source(tmp_path, "adder", ADDER, "Adder")
    first = adder.run_with_arg_set("add", {"adder": {"add": {"x": 2}}}, run_name="baseline")
    again = first.rerun(verify=True)
    assert again.info.run_name == "baseline (rerun)"
    assert again.verification.verdict == "reproduced"  # the name is not an output
    named = first.rerun(run_name="mine")
    assert named.info.run_name == "mine"
    derived = first.rerun(args={"adder": {"add": {"x": 3}}})
    assert derived.info.run_name != "baseline (rerun)"  # changed arguments: not a rerun
