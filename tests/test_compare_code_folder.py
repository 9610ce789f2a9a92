"""Paths derived from ``__file__`` in a rerun of recorded code (issue 16, point 7).

A rerun of the recorded code runs its snapshot from pcs's cache, so a component that
prints ``Path(__file__).parent`` prints another folder for the same code. The folder is
compared as ``<code folder>`` and the rule is named; a different file inside it, or a
different folder, still diverges. Real components, runs and reruns in this process.
"""

from __future__ import annotations

from pathlib import Path

from pcs import Component, LocalRepo
from pcs.verification import compare_runs
from pcs.verification.normalise import code_folders_as_placeholder

PRINTS_FOLDER = """\
from pathlib import Path


class C:
    def go(self, name="data.csv", extra=""):
        here = Path(__file__).parent
        print("folder", here)
        print("file", here / name)
        print("elsewhere", here.parent / extra if extra else "-")
        return 1
"""


def _component(tmp_path: Path) -> Component:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "comp.py").write_text(PRINTS_FOLDER)
    return Component.from_repo(LocalRepo("src", folder), "c", "comp.py", "C", instantiate=True)


def test_a_recorded_rerun_printing_its_folder_is_reproduced_and_the_rule_named(tmp_path):
    run = _component(tmp_path).run_with_arg_set("go", {}, seed=1)
    again = run.rerun(verify=True)
    report = again.verification
    assert report.verdict == "reproduced", str(report)
    assert "stdout" in report.compared
    assert "code folder paths" in report.normalised
    assert "<code folder>" not in again.load_text("pcs/stdout.txt")  # the record keeps the real path


def test_another_file_or_folder_still_diverges(tmp_path):
    component = _component(tmp_path)
    run = component.run_with_arg_set("go", {}, seed=1)
    other_file = component.run_with_arg_set("go", {"c": {"go": {"name": "other.csv"}}}, seed=1)
    report = compare_runs(run, other_file)
    assert report.verdict == "diverged"
    assert any("data.csv" in str(d) or "other.csv" in str(d) for d in report.differences), str(report)
    outside = component.run_with_arg_set("go", {"c": {"go": {"extra": "x"}}}, seed=1)
    assert compare_runs(run, outside).verdict == "diverged"


def test_only_whole_folders_are_replaced(tmp_path):
    snapshots = tmp_path / "home" / "sources"
    text = (f"/w/src\n/w/src/a.csv\n/w/srcs/a.csv\n{snapshots}/{'ab' * 20}/a.csv\n"
            f"{snapshots}/git-{'c' * 36}\n{snapshots}/notes\n")
    out, used = code_folders_as_placeholder(text, {"/w/src/"}, snapshots)
    assert out.splitlines() == ["<code folder>", "<code folder>/a.csv", "/w/srcs/a.csv",
                                "<code folder>/a.csv", "<code folder>", f"{snapshots}/notes"]
    assert used == ["code folder paths"]
    assert code_folders_as_placeholder("nothing here\n", {"/w/src"}, snapshots) == ("nothing here\n", [])
