"""Output written below Python's ``sys.stdout`` is kept with the run: descriptors 1 and 2 are captured.

Real descriptors, real child processes, a real pseudo-terminal and a real
SIGTERM; the component runs use a real SQLite MLflow store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pcs import Component, LocalRepo, Run
from pcs._capture import OutputCapture


def captured(capture: OutputCapture, folder: Path) -> tuple[str, str]:
    capture.write_files(folder)
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    return (out.read_text(encoding="utf-8") if out.exists() else "",
            err.read_text(encoding="utf-8") if err.exists() else "")


def fd_identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def test_descriptor_writes_and_child_processes_are_kept_in_the_order_written(tmp_path):
    before = fd_identity(1), fd_identity(2), sys.stdout, sys.stderr
    capture = OutputCapture()
    with capture:
        print("python 1")
        os.write(1, b"descriptor 1\n")
        subprocess.run([sys.executable, "-c",
                        "import sys; print('child out'); print('child err', file=sys.stderr)"],
                       check=True)
        print("python 2")
        print("python err", file=sys.stderr)
        os.write(2, b"descriptor err\n")
    assert (fd_identity(1), fd_identity(2), sys.stdout, sys.stderr) == before
    out, err = captured(capture, tmp_path)
    assert out == "python 1\ndescriptor 1\nchild out\npython 2\n"
    assert err == "child err\npython err\ndescriptor err\n"


def test_a_child_that_prints_a_lot_neither_blocks_nor_loses_its_tail(tmp_path):
    code = "import sys\nfor i in range(40000): sys.stdout.write(f'line {i:06d} ' + 'x' * 40 + '\\n')\n"
    capture = OutputCapture()
    with capture:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
        os.write(1, b"the end\n")
    out, _ = captured(capture, tmp_path)
    lines = out.splitlines()
    assert len(lines) == 40001
    assert lines[0].startswith("line 000000 ") and lines[39999].startswith("line 039999 ")
    assert lines[-1] == "the end"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_descriptors_are_restored_when_the_block_raises(tmp_path, error):
    before = fd_identity(1), fd_identity(2), sys.stdout, sys.stderr
    capture = OutputCapture()
    with pytest.raises(type(error)), capture:
        os.write(1, b"before the error\n")
        raise error
    assert (fd_identity(1), fd_identity(2), sys.stdout, sys.stderr) == before
    assert captured(capture, tmp_path)[0] == "before the error\n"


def test_only_the_outermost_capture_takes_the_descriptors(tmp_path):
    outer, inner = OutputCapture(), OutputCapture()
    with outer:
        print("outer")
        with inner:
            print("inner")
            os.write(1, b"inner descriptor\n")
        print("outer again")
    (tmp_path / "outer").mkdir()
    (tmp_path / "inner").mkdir()
    out_outer, _ = captured(outer, tmp_path / "outer")
    out_inner, _ = captured(inner, tmp_path / "inner")
    assert out_outer == "outer\ninner\ninner descriptor\nouter again\n"
    assert out_inner == "inner\n"  # its Python-level text; the descriptor belongs to the outer run


def test_concurrent_captures_in_threads_keep_their_own_text(tmp_path):
    barrier = threading.Barrier(2)
    captures = {name: OutputCapture() for name in ("a", "b")}

    def work(name: str) -> None:
        with captures[name]:
            barrier.wait(timeout=30)
            for i in range(50):
                print(f"{name} {i}")
            barrier.wait(timeout=30)

    threads = [threading.Thread(target=work, args=(n,)) for n in captures]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for name, capture in captures.items():
        folder = tmp_path / name
        folder.mkdir()
        out, _ = captured(capture, folder)
        assert out == "".join(f"{name} {i}\n" for i in range(50))


TTY_SCRIPT = """\
import os, sys
from pathlib import Path
from pcs._capture import OutputCapture

capture = OutputCapture()
with capture:
    print(f"inside: isatty {os.isatty(1)} {sys.stdout.isatty()} {os.isatty(2)}")
    os.write(1, b"progress 50%\\rprogress 100%\\n")
capture.write_files(Path(sys.argv[1]))
"""


def test_a_terminal_stays_a_terminal_and_nothing_is_translated(tmp_path):
    import pty

    script = tmp_path / "tty_script.py"
    script.write_text(TTY_SCRIPT, encoding="utf-8")
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                               stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        shown += data
    os.close(master)
    assert process.wait(timeout=120) == 0, shown
    kept = (tmp_path / "stdout.txt").read_bytes()
    assert kept == b"inside: isatty True True True\nprogress 50%\rprogress 100%\n"
    assert b"progress 100%" in shown  # shown live on the real terminal too


WORKER = """\
import multiprocessing
import os
import subprocess
import sys


class Worker:
    def run(self, word="alpha"):
        print(f"python {word}")
        os.write(1, f"descriptor {word}\\n".encode())
        subprocess.run([sys.executable, "-c", f"print('subprocess {word}')"], check=True)
        process = multiprocessing.get_context("spawn").Process(target=print, args=(f"spawned {word}",))
        process.start()
        process.join()
        print(f"done {word}", file=sys.stderr)
        return word
"""

FRESH = """\
import json
import sys
from pathlib import Path

from pcs import Component, LocalRepo, Run

folder = Path(sys.argv[1])
worker = Component.from_repo(LocalRepo("src", folder), "worker", "worker.py", "Worker", instantiate=True)


def main():
    first = worker.run_with_arg_set("run", {}, seed=1)
    other = worker.run_with_arg_set("run", {"worker": {"run": {"word": "beta"}}}, seed=1)
    rerun = Run.from_existing_run_id(first.identifier).rerun(verify=True)
    from pcs.verification import compare_runs

    differ = compare_runs(first, other)
    stored = Run.from_existing_run_id(first.identifier)
    print(json.dumps({
        "stdout": stored.load_text("pcs/stdout.txt"),
        "stderr": stored.load_text("pcs/stderr.txt"),
        "verdict": rerun.verification.verdict,
        "compared": rerun.verification.compared,
        "other": differ.verdict,
        "other_kinds": sorted({d.kind for d in differ.differences}),
    }), file=open(folder / "result.json", "w"))


if __name__ == "__main__":  # the spawned worker imports this file again
    main()
"""


@pytest.fixture(scope="module")
def fresh_process_result(tmp_path_factory, template_store):
    from conftest import make_store

    folder = tmp_path_factory.mktemp("fresh_capture")
    (folder / "worker.py").write_text(WORKER, encoding="utf-8")
    (folder / "main.py").write_text(FRESH, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env["MLFLOW_TRACKING_URI"] = make_store(folder / "store", template_store)
    env["PCS_HOME"] = str(folder / "pcs_home")
    process = subprocess.run([sys.executable, str(folder / "main.py"), str(folder)], cwd=folder,
                             env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    result["live"] = process.stdout
    return result


def test_a_component_run_keeps_descriptor_subprocess_and_spawned_output(fresh_process_result):
    result = fresh_process_result
    assert result["stdout"] == (
        "python alpha\ndescriptor alpha\nsubprocess alpha\nspawned alpha\n"
    )
    assert result["stderr"] == "done alpha\n"
    # and it was shown live
    assert "spawned alpha" in result["live"] and "descriptor alpha" in result["live"]


def test_a_rerun_of_it_reproduces_and_a_different_run_diverges_on_its_output(fresh_process_result):
    result = fresh_process_result
    assert result["verdict"] == "reproduced"
    assert "stdout" in result["compared"]
    assert result["other"] == "diverged" and "stdout" in result["other_kinds"]


def test_in_process_component_runs_capture_descriptor_output_too(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "echo.py").write_text(textwrap.dedent("""\
        import os
        import subprocess


        class Echo:
            def run(self, word="one"):
                os.write(1, f"descriptor {word}\\n".encode())
                subprocess.run(["echo", f"child {word}"], check=True)
    """), encoding="utf-8")
    echo = Component.from_repo(LocalRepo("src", folder), "echo", "echo.py", "Echo", instantiate=True)
    run = echo.run_with_arg_set("run", {})
    assert Run.from_existing_run_id(run.identifier).load_text("pcs/stdout.txt") == (
        "descriptor one\nchild one\n"
    )


SIGTERM_SCRIPT = """\
import os, signal, sys
from pathlib import Path
from pcs import Component, LocalRepo, Run

folder = Path(sys.argv[1])
(folder / "killed.py").write_text(
    "import os, signal\\n"
    "class Killed:\\n"
    "    def run(self):\\n"
    "        os.write(1, b'written before the signal\\\\n')\\n"
    "        os.kill(os.getpid(), signal.SIGTERM)\\n"
    "        import time\\n"
    "        time.sleep(60)\\n"
)
component = Component.from_repo(LocalRepo("src", folder), "killed", "killed.py", "Killed", instantiate=True)
component.run_with_arg_set("run", {})
"""


def test_sigterm_ends_the_run_killed_with_its_descriptor_output_kept(tmp_path, isolated):
    (tmp_path / "src").mkdir()
    script = tmp_path / "sigterm.py"
    script.write_text(SIGTERM_SCRIPT, encoding="utf-8")
    process = subprocess.run([sys.executable, str(script), str(tmp_path / "src")],
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGTERM, process.stderr[-2000:]
    assert "written before the signal" in process.stdout  # shown live, through the reader
    (run,) = Run.get_all_runs()
    assert run.status == "KILLED"
    assert run.load_text("pcs/stdout.txt") == "written before the signal\n"


ORDER_SCRIPT = """\
import os, subprocess, sys
from pathlib import Path
from pcs._capture import OutputCapture

capture = OutputCapture()
with capture:
    print("from Python")
    os.write(1, b"from the descriptor\\n")
    subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    print("the end")
capture.write_files(Path(sys.argv[1]))
"""


def test_a_block_buffered_stdout_keeps_the_order_the_program_wrote_in(tmp_path):
    # stdout is a pipe here, so Python buffers what it prints; the record must not
    # depend on that (a run on a terminal and its rerun in CI would differ)
    script = tmp_path / "order.py"
    script.write_text(ORDER_SCRIPT, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = "from Python\nfrom the descriptor\nfrom a child\nthe end\n"
    assert (tmp_path / "stdout.txt").read_text(encoding="utf-8") == expected
    assert done.stdout == expected


JSON_SCRIPT = """\
import contextlib, os, sys
from pathlib import Path
from pcs._capture import OutputCapture

capture = OutputCapture()
with contextlib.redirect_stdout(sys.stderr), capture:  # as `pcs run --json` does
    print("printed")
    os.write(2, b"written to stderr\\n")
capture.write_files(Path(sys.argv[1]))
"""


def test_stdout_sent_to_stderr_is_kept_once_as_stdout(tmp_path):
    script = tmp_path / "json_mode.py"
    script.write_text(JSON_SCRIPT, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "stdout.txt").read_text(encoding="utf-8") == "printed\n"
    assert (tmp_path / "stderr.txt").read_text(encoding="utf-8") == "written to stderr\n"
    assert done.stdout == "" and "printed" in done.stderr
