"""Exit codes: the table in the README and in ``pcs --help`` is the one the code uses, and
a wrong registry URL or bundle path is one line and exit 7, whatever the store holds.
"""

from __future__ import annotations

import re
import socket

from conftest import REPO_ROOT, pcs_in_process

from pcs import Run
from pcs.errors import EXIT_CODES

pcs = pcs_in_process


def _dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just given back by the kernel)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_the_readme_and_help_list_the_exit_codes_the_code_uses(capsys):
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", readme, flags=re.MULTILINE))
    assert sorted(int(code) for code in table) == sorted(EXIT_CODES.values())
    assert "registry, bundle" in table[str(EXIT_CODES["registry"])]
    assert table[str(EXIT_CODES["usage"])].startswith("usage")
    assert "disk is full" in table[str(EXIT_CODES["disk_full"])]

    code, out, _ = pcs(capsys, "--help")
    listed = " ".join(out.split()).partition("Exit codes:")[2].split("Options:")[0]
    assert code == 0 and listed
    assert sorted(int(n) for n in re.findall(r"(?:^|,)\s*(\d+) ", listed)) == sorted(EXIT_CODES.values())


def test_pull_from_a_dead_url_fails_in_one_line_also_for_a_local_run(capsys):
    with Run(run_name="here already") as run:
        run.log_param("lr", "0.1")
    code, out, err = pcs(capsys, "pull", run.identifier, "--from", _dead_url())
    assert code == EXIT_CODES["registry"] == 7
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Cannot reach the registry at http://127.0.0.1:")
    assert "Traceback" not in err and "upload" not in err  # a pull uploads nothing


def test_pull_from_a_dead_url_creates_no_store(capsys, tmp_path, monkeypatch):
    fresh = tmp_path / "fresh" / "mlflow.db"
    fresh.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{fresh}")
    code, _, err = pcs(capsys, "pull", "0" * 32, "--from", _dead_url())
    assert code == 7 and "Cannot reach the registry" in err
    assert "creating one" not in err and not fresh.exists()


def test_importing_a_missing_bundle_is_a_bundle_error(capsys, tmp_path, monkeypatch):
    fresh = tmp_path / "fresh" / "mlflow.db"
    fresh.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{fresh}")
    missing = tmp_path / "runs.tar.gz"
    code, _, err = pcs(capsys, "import", str(missing))
    assert code == EXIT_CODES["registry"]  # as for pcs run -r with a missing registry file
    assert err.strip() == (f"Error: Bundle {missing} does not exist. Pass the folder or .tar.gz "
                           "file that 'pcs export RUN_ID -o PATH' wrote.")
    assert not fresh.exists()
