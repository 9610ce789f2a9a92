"""Every output a training run produces is compared (or named as not compared).

One training component, shaped like ordinary MLflow code: an sklearn model
logged with ``log_model`` (a LoggedModel), a tag, a nested run, metrics logged
from a thread pool, SVG/PDF figures, an image by key and step, a file under
``pcs/`` and a predictions file returned by path. Run deterministically, its
rerun is "reproduced" (dates and random ids removed, and named); with one of
those outputs made to vary (``VARY=<output>,...``), the rerun "diverged" naming each.
"""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli

from pcs import Component, LocalRepo, Run
from pcs.verification import compare_runs

TRAIN = """\
import os
from concurrent.futures import ThreadPoolExecutor

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
from sklearn.linear_model import LinearRegression

from pcs import active_component_run


class Trainer:
    def fit(self, n=8):
        vary = os.environ.get("VARY", "").split(",")
        noise = int.from_bytes(os.urandom(2), "big") + 1

        def maybe(name, value):
            return value + noise if name in vary else value

        x = np.arange(float(n)).reshape(-1, 1)
        model = LinearRegression().fit(x, 2 * x.ravel() + maybe("model", 0))
        mlflow.sklearn.log_model(model, name="model")
        mlflow.set_tag("stage", str(maybe("tag", 1)))
        with mlflow.start_run(nested=True, run_name="evaluate"):
            mlflow.log_metric("r2", maybe("child", 1.0))

        def work(i):
            mlflow.log_metric("shard_loss", float(maybe("thread", i)), step=i)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(work, range(3)))

        fig, ax = plt.subplots()
        ax.plot(model.predict(x))
        mlflow.log_figure(fig, "plots/fit.svg")
        mlflow.log_figure(fig, "plots/fit.pdf")
        plt.close(fig)
        image = np.full((4, 4, 3), 7 + (noise % 200 + 1 if "image" in vary else 0), dtype=np.uint8)
        mlflow.log_image(image, key="residuals", step=1)
        mlflow.log_text(str(maybe("pcs_artifact", 1)), "pcs/notes.txt")

        os.makedirs("outputs", exist_ok=True)
        with open("outputs/predictions.csv", "w") as out:
            out.write(",".join(str(v) for v in model.predict(x) + maybe("returned_file", 0)))
        return "outputs/predictions.csv"
"""


def trainer(folder: Path) -> Component:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(TRAIN, encoding="utf-8")
    return Component.from_repo(LocalRepo("train_dir", folder), "train", "train.py", "Trainer",
                               instantiate=True)


def test_a_training_run_reproduces_and_each_varying_output_diverges(tmp_path, monkeypatch):
    original = Run.from_existing_run_id(
        trainer(tmp_path / "src").run_with_arg_set("fit", {}, seed=3).identifier
    )
    report = original.rerun(verify=True).verification
    assert report.verdict == "reproduced", str(report)
    compared = ", ".join(report.compared)
    for what in ("return value", "the returned file outputs/predictions.csv", "1 tag(s)",
                 "1 logged model(s)", "1 child run(s)", "thread run(s)"):
        assert what in compared, compared
    # figures (svg, pdf), the image (png, webp) and pcs/notes.txt
    assert "5 artifact(s)" in compared, compared
    for rule in ("figure dates", "model ids", "image names", "zip member times"):
        assert rule in report.normalised, report.normalised
    assert "compared after removing: " in str(report)

    expected = {
        "model": ("model", "logged model 'model'"),
        "tag": ("tag", "tag stage differs"),
        "child": ("metric", "child run 'evaluate': metric r2 differs"),
        "thread": ("thread_runs", "metric shard_loss logged from worker threads differs"),
        "image": ("artifact", "images/residuals step 1.png"),
        "pcs_artifact": ("artifact", "artifact pcs/notes.txt differs"),
        "returned_file": ("returned_file", "the returned file outputs/predictions.csv differs"),
    }
    # every output made to vary in one rerun (a training run takes seconds): each is named
    monkeypatch.setenv("VARY", ",".join(expected))
    # the run read VARY (unset): a rerun would set it back, so it keeps today's value
    report = original.rerun(verify=True, env_vars="current").verification
    assert report.verdict == "diverged", str(report)
    for vary, (kind, says) in expected.items():
        assert any(d.kind == kind and says in d.detail for d in report.differences), f"{vary}: {report}"
    # and one output alone is enough for "diverged"
    monkeypatch.setenv("VARY", "thread")
    report = original.rerun(verify=True, env_vars="current").verification
    assert report.verdict == "diverged", str(report)
    assert [d.kind for d in report.differences] == ["thread_runs"], str(report)


def test_diff_raw_compares_bytes(tmp_path):
    original = trainer(tmp_path / "src").run_with_arg_set("fit", {}, seed=3)
    rerun = Run.from_existing_run_id(original.identifier).rerun()

    normal = run_cli("diff", original.identifier, rerun.identifier)
    assert "reproduced" in normal.stdout.splitlines()[0], normal.stdout
    assert "compared after removing: " in normal.stdout

    raw = run_cli("diff", "--raw", original.identifier, rerun.identifier, check=False)
    assert raw.returncode == 1, raw.stdout + raw.stderr
    assert "diverged" in raw.stdout.splitlines()[0]
    assert "compared after removing" not in raw.stdout


def test_only_the_code_s_own_tags_and_pcs_files_are_outputs(tmp_path):
    """pcs's and MLflow's own tags and pcs's record files are the record, never outputs."""
    source = tmp_path / "plain"
    source.mkdir()
    (source / "plain.py").write_text("class P:\n    def go(self):\n        return 1\n", encoding="utf-8")
    component = Component.from_repo(LocalRepo("p", source), "plain", "plain.py", "P", instantiate=True)
    first = component.run_with_arg_set("go", {}, seed=1)
    second = component.run_with_arg_set("go", {}, seed=2)
    report = compare_runs(Run.from_existing_run_id(first.identifier), Run.from_existing_run_id(second.identifier))
    assert report.verdict == "reproduced", str(report)
    assert report.compared == ["return value"]
