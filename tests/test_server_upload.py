"""A run's staged files reach an ``mlflow server``'s proxied artifact store whole.

pcs uploads them several at once (MLflow sends one PUT per file, one after
another); each file must arrive intact under ``pcs/code/<path>``, and a file
the server refuses must fail the upload, as MLflow's own ``log_artifacts`` does.
"""

from __future__ import annotations

import http.server
import logging
import threading
from pathlib import Path

import pytest
import requests
from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

from pcs import Component, LocalRepo
from pcs.run import _staged_files, _upload_concurrently

HELPERS = 12


def _project(folder: Path) -> dict[str, str]:
    """A component whose module imports ``HELPERS`` helper modules of a package; its files' texts."""
    texts = {"pkg/__init__.py": ""}
    for i in range(HELPERS):
        texts[f"pkg/helper_{i:02d}.py"] = f"def value():\n    return {i}  # helper {i}\n"
    imports = "".join(f"from pkg import helper_{i:02d}\n" for i in range(HELPERS))
    total = " + ".join(f"helper_{i:02d}.value()" for i in range(HELPERS))
    texts["agent.py"] = f"{imports}\n\nclass Agent:\n    def run(self):\n        return {total}\n"
    for path, text in texts.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text, encoding="utf-8")
    return texts


def test_every_helper_module_is_stored_intact_under_its_own_path(store, tmp_path):
    folder = tmp_path / "project"
    texts = _project(folder)
    agent = Component.from_repo(LocalRepo("here", folder), "agent", "agent.py", "Agent",
                                instantiate=True)
    run = agent.run_with_arg_set("run", {}, seed=1)
    assert run.status == "FINISHED"
    assert run.return_value == sum(range(HELPERS))
    assert run.artifact_paths("pcs/code") == sorted(f"pcs/code/{path}" for path in texts)
    for path, text in texts.items():
        assert run.load_text(f"pcs/code/{path}") == text


class _RefusingHandler(http.server.BaseHTTPRequestHandler):
    """Takes every PUT, answering 403 for files whose name starts with ``refused``."""

    received: list[str]

    def do_PUT(self):  # noqa: N802 - the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append(self.path)  # type: ignore[attr-defined]
        refused = self.path.rsplit("/", 1)[-1].startswith("refused")
        self.send_response(403 if refused else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHandler)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_file_the_server_refuses_fails_the_upload_after_the_others_are_sent(
        refusing_server, tmp_path, caplog):
    staged = tmp_path / "staged"
    (staged / "code" / "pkg").mkdir(parents=True)
    names = ["code/a.py", "code/pkg/refused_1.py", "code/pkg/b.py", "code/refused_2.py",
             "code/pkg/c.py", "code/d.py", "code/e.py", "code/f.py", "code/g.py", "code/h.py"]
    for name in names:
        (staged / name).write_text(name, encoding="utf-8")
    host, port = refusing_server.server_address
    repo = HttpArtifactRepository(f"http://{host}:{port}/artifacts/run")
    with caplog.at_level(logging.WARNING, logger="pcs.run"), \
            pytest.raises(requests.HTTPError) as raised:  # what MLflow's log_artifacts raises
        _upload_concurrently(repo, _staged_files(staged, "pcs"))
    # every file was sent, the refused ones included; the first refusal (in file order:
    # code/ before code/pkg/) is raised and the other one is named in a warning
    assert sorted(refusing_server.received) == sorted(f"/artifacts/run/pcs/{n}" for n in names)
    assert "403" in str(raised.value)
    assert "refused_2.py" in str(raised.value)
    warnings = [r.getMessage() for r in caplog.records if "could not upload" in r.getMessage()]
    assert len(warnings) == 1
    assert "refused_1.py" in warnings[0]
