"""Each normalisation rule removes what is volatile by design, and never a computed difference."""

from __future__ import annotations

import datetime
import gzip
import io
import zipfile

import pytest

from pcs.verification.normalise import (
    RULES,
    normalise_artifact_paths,
    normalise_file,
    normalise_text,
)
from pcs.verification.outputs import first_line_difference


def figure(values, fmt: str, **savefig) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(values)
    out = io.BytesIO()
    fig.savefig(out, format=fmt, **savefig)
    plt.close(fig)
    return out.getvalue()


def same(path: str, a: bytes, b: bytes) -> list[str]:
    """The rules that made ``a`` and ``b`` equal (fails when they stay different)."""
    (na, used_a), (nb, used_b) = normalise_file(path, a), normalise_file(path, b)
    assert na == nb
    return sorted(set(used_a) | set(used_b))


def differ(path: str, a: bytes, b: bytes) -> None:
    assert normalise_file(path, a)[0] != normalise_file(path, b)[0]


def test_svg_figure_dates_and_random_ids():
    first, second = figure([1, 2, 3], "svg"), figure([1, 2, 3], "svg")
    assert first != second  # matplotlib writes the date and random clip-path ids
    assert set(same("plots/loss.svg", first, second)) <= {"figure dates", "figure ids"}
    assert "figure dates" in same("plots/loss.svg", first, second)
    differ("plots/loss.svg", first, figure([1, 2, 4], "svg"))


def test_pdf_figure_dates():
    dates = [datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
             datetime.datetime(2025, 6, 7, 8, 9, 10, tzinfo=datetime.timezone.utc)]
    first, second = (figure([1, 2], "pdf", metadata={"CreationDate": d}) for d in dates)
    assert first != second
    assert same("fig.pdf", first, second) == ["figure dates"]
    differ("fig.pdf", first, figure([1, 3], "pdf", metadata={"CreationDate": dates[0]}))


def test_png_date_chunks():
    first = figure([1, 2], "png", metadata={"Creation Time": "2024-01-01 00:00"})
    second = figure([1, 2], "png", metadata={"Creation Time": "2025-02-02 11:11"})
    assert first != second
    assert same("fig.png", first, second) == ["figure dates"]
    differ("fig.png", first, figure([2, 1], "png", metadata={"Creation Time": "2024-01-01 00:00"}))


def test_gzip_header_time():
    first = gzip.compress(b"a,b\n1,2\n", mtime=1)
    second = gzip.compress(b"a,b\n1,2\n", mtime=2)
    assert first != second
    assert same("predictions.csv.gz", first, second) == ["gzip times"]
    differ("predictions.csv.gz", first, gzip.compress(b"a,b\n1,3\n", mtime=1))


def zipped(members: dict[str, bytes], when: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, when), data)
    return out.getvalue()


def test_zip_member_times():
    first = zipped({"weights.bin": b"\x01\x02"}, (2024, 1, 1, 0, 0, 0))
    second = zipped({"weights.bin": b"\x01\x02"}, (2025, 3, 3, 3, 3, 4))
    assert first != second
    assert same("model.zip", first, second) == ["zip member times"]
    differ("model.zip", first, zipped({"weights.bin": b"\x01\x03"}, (2024, 1, 1, 0, 0, 0)))


def test_skops_object_ids_are_renumbered():
    def skops(ids: tuple[int, int], weight: bytes) -> bytes:
        schema = f'{{"content": {{"file": "{ids[0]}.npy", "__id__": {ids[0]}}}, "__id__": {ids[1]}}}'
        return zipped({"schema.json": schema.encode(), f"{ids[0]}.npy": weight}, (2024, 1, 1, 0, 0, 0))

    first, second = skops((140001, 140002), b"w1"), skops((139555, 139777), b"w1")
    assert "object addresses" in same("model/model.skops", first, second)
    differ("model/model.skops", first, skops((139555, 139777), b"w2"))


MLMODEL = """\
artifact_path: mlflow-artifacts:/1/models/m-{model}/artifacts
flavors:
  sklearn:
    sklearn_version: 1.5.0
mlflow_version: 3.1.0
model_id: m-{model}
model_uuid: {uuid}
run_id: {run}
utc_time_created: '{time}'
"""


def test_mlmodel_ids_and_time():
    first = MLMODEL.format(model="a" * 32, uuid="1" * 32, run="2" * 32, time="2024-01-01 00:00:00")
    second = MLMODEL.format(model="b" * 32, uuid="3" * 32, run="4" * 32, time="2025-01-01 00:00:00")
    assert same("model/MLmodel", first.encode(), second.encode()) == ["model ids"]
    differ("model/MLmodel", first.encode(), first.replace("1.5.0", "1.6.0").encode())


def test_sklearn_html_ids():
    first = b'<div id="sk-container-id-1" class="sk-top-container"><input id="sk-estimator-id-1">w=2</div>'
    second = first.replace(b"-id-1", b"-id-7")
    assert same("model/estimator.html", first, second) == ["sklearn HTML ids"]
    differ("model/estimator.html", first, first.replace(b"w=2", b"w=3"))


def test_mlflow_view_run_lines_leave_the_rest():
    out = ("loss 0.5\n\U0001f3c3 View run bright-fox-1 at: http://127.0.0.1:5000/#/experiments/1/runs/"
           + "a" * 32 + "\n\U0001f9ea View experiment at: http://127.0.0.1:5000/#/experiments/1\n")
    text, used = normalise_text(out)
    assert text == "loss 0.5\n" and used == ["MLflow links"]


def test_object_addresses_in_params():
    a = "FunctionTransformer(func=<function scale at 0x7f3a2c1d0e50>)"
    b = "FunctionTransformer(func=<function scale at 0x7f99aa001122>)"
    assert normalise_text(a)[0] == normalise_text(b)[0]
    assert normalise_text(a)[1] == ["object addresses"]
    assert normalise_text(a)[0] != normalise_text(a.replace("scale", "shift"))[0]


def test_log_image_names_by_key_and_step():
    uuid_a, uuid_b = "0" * 8 + "-1111-2222-3333-" + "4" * 12, "9" * 8 + "-1111-2222-3333-" + "4" * 12
    first = [f"images/confusion+step+3+timestamp+1700000000000+{uuid_a}.png",
             f"images/confusion+step+3+timestamp+1700000000000+{uuid_a}+compressed.webp",
             "plots/loss.svg"]
    second = [f"images/confusion+step+3+timestamp+1800000000123+{uuid_b}.png",
              f"images/confusion+step+3+timestamp+1800000000123+{uuid_b}+compressed.webp",
              "plots/loss.svg"]
    names_a, used = normalise_artifact_paths(first)
    names_b, _ = normalise_artifact_paths(second)
    assert set(names_a) == set(names_b) == {
        "images/confusion step 3.png", "images/confusion step 3 compressed.webp", "plots/loss.svg"
    }
    assert used == ["image names"]
    other, _ = normalise_artifact_paths([first[0].replace("step+3", "step+4")])
    assert set(other) == {"images/confusion step 4.png"}


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_is_named_in_the_module_docstring(rule):
    import pcs.verification.normalise as module

    assert f"``{rule}``" in module.__doc__


def test_a_differing_line_shows_the_first_differing_column_with_context():
    prefix = "epoch 12 of 40: training loss on the held-out fold = "
    detail = first_line_difference(f"start\n{prefix}0.123456 (best so far)\n", f"start\n{prefix}0.123999 (best so far)\n")
    column = len(prefix) + 6
    assert detail.startswith(f" at line 2, column {column}:")
    # both sides show the text around the difference, not two equal prefixes
    assert "0.123456 (best" in detail and "0.123999 (best" in detail
    assert "..." in detail and "epoch 12" not in detail
    assert first_line_difference("a\nb\n", "a\n") == ": 2 lines vs 1"


def test_requirement_order_of_a_logged_model():
    first = b"mlflow==3.1\nscikit-learn==1.5\nnumpy==2.0"
    second = b"mlflow==3.1\nnumpy==2.0\nscikit-learn==1.5"
    assert same("model/requirements.txt", first, second) == ["requirement order"]
    differ("model/requirements.txt", first, first.replace(b"numpy==2.0", b"numpy==2.1"))
    conda = "dependencies:\n- python=3.11\n- pip:\n  - {}\n  - {}\nname: mlflow-env\n"
    a = conda.format("scikit-learn==1.5", "numpy==2.0").encode()
    b = conda.format("numpy==2.0", "scikit-learn==1.5").encode()
    assert same("model/conda.yaml", a, b) == ["requirement order"]
    differ("model/conda.yaml", a, conda.format("numpy==2.1", "scikit-learn==1.5").encode())
