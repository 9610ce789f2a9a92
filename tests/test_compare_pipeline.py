"""A pipeline of components: the inner component runs it starts are compared as child runs."""

from __future__ import annotations

from pathlib import Path

from pcs import Component, LocalRepo, Run

PIPELINE = """\
class Pipeline:
    def go(self):
        score = self.trainer.__component__.run("fit")
        return "done"
"""

TRAINER = """\
import os


class Trainer:
    def fit(self):
        return 1.0 + (int.from_bytes(os.urandom(2), "big") + 1 if os.environ.get("VARY") else 0)
"""


def pipeline(folder: Path) -> Component:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.py").write_text(PIPELINE, encoding="utf-8")
    (folder / "trainer.py").write_text(TRAINER, encoding="utf-8")
    repo = LocalRepo("pipe_dir", folder)
    outer = Component.from_repo(repo, "pipeline", "pipeline.py", "Pipeline", instantiate=True)
    outer.add_dependency(Component.from_repo(repo, "trainer", "trainer.py", "Trainer", instantiate=True))
    return outer


def test_an_inner_component_run_is_compared(tmp_path, monkeypatch):
    run = Run.from_existing_run_id(pipeline(tmp_path / "src").run_with_arg_set("go", {}, seed=2).identifier)
    report = run.rerun(verify=True).verification
    assert report.verdict == "reproduced", str(report)
    assert "1 child run(s)" in report.compared

    monkeypatch.setenv("VARY", "1")
    # the run read VARY (unset): a rerun would set it back, so it keeps today's value
    report = run.rerun(verify=True, env_vars="current").verification
    assert report.verdict == "diverged", str(report)
    assert report.first_difference.kind == "return_value"
    assert report.first_difference.detail.startswith("child run "), str(report)
    assert "return value differs" in report.first_difference.detail
