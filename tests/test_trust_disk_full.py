"""Issue 21.7: a full disk is one line naming the path and what was written, exit 11.

A real tmpfs, mounted small and filled, as the output folder and as TMPDIR
(skipped with the reason where this machine cannot mount one).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid

import pytest
from conftest import run_cli

from pcs import Run, transfer
from pcs.errors import EXIT_CODES


@contextlib.contextmanager
def _small_disk(mount, size: str, room: int, before=None):
    """A tmpfs of ``size`` at ``mount`` (after ``before(mount)`` ran), filled but for ``room`` bytes."""
    mount.mkdir()
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                           capture_output=True, text=True)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({tried.stderr.strip() or 'mount failed'})")
    try:
        if before is not None:
            before(mount)
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - room))
        os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs, filled but for a few KiB."""
    with _small_disk(tmp_path / "small", "1m", 16384) as mount:
        yield mount


@pytest.fixture
def run_with_artifact(tmp_path):
    with Run(run_name="big") as run:
        data = tmp_path / "noise.bin"
        data.write_bytes(os.urandom(300_000))  # incompressible: the archive is as big
        run.log_artifact(str(data))
    return run.identifier


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_export_to_a_full_disk_names_the_path(full_disk, run_with_artifact):
    out = full_disk / "bundle.tar.gz"
    result = run_cli("export", run_with_artifact, "-o", str(out), check=False)
    assert result.returncode == EXIT_CODES["disk_full"] == 11, result.stderr
    line = _one_line(result)
    assert "No space left" in line and str(full_disk) in line
    assert not out.exists() and not [p for p in full_disk.iterdir() if p.name != "filler"]


def test_import_with_a_full_tmpdir_names_the_temporary_folder(full_disk, run_with_artifact,
                                                             tmp_path, template_store):
    from conftest import make_store

    bundle = tmp_path / "bundle.tar.gz"
    transfer.export_bundle([run_with_artifact], bundle)
    other = make_store(tmp_path / f"other-{uuid.uuid4().hex[:6]}", template_store)
    result = run_cli("import", str(bundle), check=False,
                     env={"TMPDIR": str(full_disk), "MLFLOW_TRACKING_URI": other})
    assert result.returncode == 11, result.stderr
    line = _one_line(result)
    assert "No space left" in line and "temporary folder (TMPDIR)" in line
    assert not [p for p in full_disk.iterdir() if p.name != "filler"]


FILLS_THE_STORE = """
import mlflow
mlflow.log_param("lr", 0.1)
for i in range(10000):  # about 100 KB a step: the disk fills in a few steps
    mlflow.log_metrics({f"loss_{j}": 1.0 / (i + j + 1) for j in range(500)}, step=i)
print("never here")
"""


def test_a_run_that_fills_its_stores_disk_is_one_line_and_ends_failed(tmp_path, template_store):
    """The issue's case: MLflow logged its SQLAlchemy error chain (about 120 lines, 5
    tracebacks) and pcs printed the script's traceback before its own line."""
    from conftest import make_store
    from mlflow import MlflowClient

    def store_there(mount):
        make_store(mount, template_store)

    with _small_disk(tmp_path / "store_disk", "4m", 200_000, before=store_there) as mount:
        uri = f"sqlite:///{mount / 'mlflow.db'}"
        (tmp_path / "fill.py").write_text(FILLS_THE_STORE)
        result = run_cli("run", "fill.py", cwd=tmp_path, check=False,
                         env={"MLFLOW_TRACKING_URI": uri})
        assert result.returncode == 11, result.stderr
        line = _one_line(result)
        run_id = result.stdout.strip().splitlines()[-1]
        assert "No space left on the disk of the tracking store" in line and str(mount) in line
        assert f"Run {run_id} ended FAILED" in line
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
        assert run.info.status == "FAILED" and run.data.params["lr"] == "0.1"
        assert "never here" not in result.stdout


def test_the_library_raises_disk_full_error_naming_the_place(full_disk, run_with_artifact, tmp_path,
                                                             template_store, monkeypatch):
    """Python callers get pcs's error (exit code 11 in the CLI), not OSError or MLflow's."""
    from pcs.errors import DiskFullError

    out = full_disk / "bundle.tar.gz"
    with pytest.raises(DiskFullError, match="No space left") as raised:
        transfer.export_bundle([run_with_artifact], out)
    assert str(full_disk) in str(raised.value) and raised.value.exit_code == 11
    assert not out.exists() and not [p for p in full_disk.iterdir() if p.name != "filler"]

    bundle = tmp_path / "bundle.tar.gz"
    transfer.export_bundle([run_with_artifact], bundle)
    from conftest import make_store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(tmp_path / "other", template_store))
    monkeypatch.setenv("TMPDIR", str(full_disk))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again, as a new process does
    with pytest.raises(DiskFullError, match="temporary folder"):
        transfer.import_bundle(bundle)


def test_a_record_text_that_cannot_be_stored_is_written_as_a_new_file(tmp_path):
    """With no room for the process's store of texts (TMPDIR full), a record file is written
    itself; a file already at its place, a link other runs' records share, is replaced and never
    written into."""
    shared, staged = tmp_path / "earlier_run.yaml", tmp_path / "staged.yaml"
    shared.write_text("a: 1\n")
    os.link(shared, staged)
    code = (
        "import sys; from pathlib import Path; from pcs.record.code import place_text\n"
        "place_text(Path(sys.argv[1]), 'a: 2\\n' + 'x' * 65536)\n"
    )
    with _small_disk(tmp_path / "small", "1m", 4096) as tmpdir:
        result = subprocess.run([sys.executable, "-c", code, str(staged)], capture_output=True,
                                text=True, env=dict(os.environ, TMPDIR=str(tmpdir)), timeout=120)
    assert result.returncode == 0, result.stderr
    assert staged.read_text().startswith("a: 2\n")
    assert shared.read_text() == "a: 1\n"  # the earlier run's record is as it was
