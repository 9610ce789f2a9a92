"""The closure's caches (issue 22.2) never give a stale answer: real files, real runs in one process.

A session classifies only the ``sys.modules`` entries added or replaced since
its last look, a module's source is read again only when its file changed, and
a static scan is kept by content in ``$PCS_HOME/scans``. Each test here would
fail if one of those served what was true before instead of what is true now.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from pcs import Component, LocalRepo
from pcs.record import closure
from pcs.specs import sha256_bytes

COMP = """\
from helper import value


class Comp:
    def fn(self):
        return value()
"""


def helper_text(value: int) -> str:
    return f"def value():\n    return {value}\n"  # the same size for every one-digit value


def age(path: Path, seconds: float = 3600) -> int:
    """Set the file's mtime back, so its read is not racy; the mtime set, in ns."""
    mtime = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(mtime, mtime))
    return mtime


def component(root: Path, file: str = "comp.py") -> Component:
    return Component.from_repo(LocalRepo("src", root), "comp", file, "Comp", instantiate=True)


def test_a_helper_edited_in_place_with_the_same_size_and_mtime_is_read_again(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "comp.py").write_text(COMP)
    helper = root / "helper.py"
    helper.write_text(helper_text(1))
    mtime = age(helper)
    comp = component(root)

    first = comp.run_with_arg_set("fn", {}, seed=1)
    assert str(helper) in closure._READS  # a settled file is remembered: the cache is in play

    helper.write_text(helper_text(2))
    os.utime(helper, ns=(mtime, mtime))  # same size, same mtime, same inode: only ctime moved
    second = comp.run_with_arg_set("fn", {}, seed=1)

    assert (first.return_value, second.return_value) == (1, 2)
    assert second.run_command.code["comp:helper"]["sha256"] == sha256_bytes(helper_text(2).encode())
    assert helper_text(2) in second.recorded_sources().values()


def test_a_helper_edited_within_the_same_second_is_read_again(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "comp.py").write_text(COMP)
    helper = root / "helper.py"
    helper.write_text(helper_text(1))
    comp = component(root)

    first = comp.run_with_arg_set("fn", {}, seed=1)
    assert str(helper) not in closure._READS  # changed just now: a racy read is not remembered

    stat = helper.stat()
    helper.write_text(helper_text(3))
    os.utime(helper, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = comp.run_with_arg_set("fn", {}, seed=1)

    assert (first.return_value, second.return_value) == (1, 3)
    assert second.run_command.code["comp:helper"]["sha256"] == sha256_bytes(helper_text(3).encode())


def test_modules_added_replaced_and_removed_between_runs_are_seen(tmp_path, monkeypatch):
    # The helper lies under the repo root but outside the component's folder, found on
    # sys.path: the session finds it in sys.modules only through its index of loaded files.
    root = tmp_path / "src"
    (root / "agents").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "agents" / "comp.py").write_text(COMP)
    helper = root / "shared" / "helper.py"
    helper.write_text(helper_text(1))
    monkeypatch.syspath_prepend(str(root / "shared"))
    comp = component(root, "agents/comp.py")
    try:
        assert comp.run_with_arg_set("fn", {}, seed=1).return_value == 1

        # added: the user imports the helper, then edits it; the run serves the file as it is
        users = importlib.import_module("helper")
        helper.write_text(helper_text(4))
        run = comp.run_with_arg_set("fn", {}, seed=1)
        assert run.return_value == 4
        assert run.run_command.code["comp:helper"]["sha256"] == sha256_bytes(helper_text(4).encode())
        assert sys.modules["helper"] is users  # taken out for the run, given back after it

        # replaced: another module object under the same name, from the same file
        spec = importlib.util.spec_from_file_location("helper", helper)
        assert spec is not None and spec.loader is not None
        replaced = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(replaced)
        sys.modules["helper"] = replaced
        helper.write_text(helper_text(5))
        assert comp.run_with_arg_set("fn", {}, seed=1).return_value == 5
        assert sys.modules["helper"] is replaced

        # removed: nothing of it comes back after the run
        del sys.modules["helper"]
        helper.write_text(helper_text(6))
        assert comp.run_with_arg_set("fn", {}, seed=1).return_value == 6
        assert "helper" not in sys.modules
    finally:
        sys.modules.pop("helper", None)


def test_a_component_module_reloaded_each_run_keeps_the_index_on_its_fast_path(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "comp.py").write_text(COMP)
    (root / "helper.py").write_text(helper_text(1))
    comp = component(root)
    comp.run_with_arg_set("fn", {}, seed=1)
    comp.run_with_arg_set("fn", {}, seed=1)
    walks = closure._MODULES.refreshes

    for _ in range(2):
        assert comp.run_with_arg_set("fn", {}, seed=1).return_value == 1

    assert closure._MODULES.refreshes == walks  # no walk over sys.modules in a steady run


def test_a_scan_is_kept_by_content_in_pcs_home_and_a_bad_entry_is_scanned_again(tmp_path):
    # large enough to be kept on disk (a small text parses faster than a file is read)
    text = "import json\nfrom .sibling import thing\nRUN = 'prepare.py'\n" + "# padding\n" * 1000
    assert len(text) >= closure._PERSIST_MIN
    digest = sha256_bytes(text.encode())
    closure._SCANS.pop(digest, None)
    expected = ((0, "json", ()), (1, "sibling", ("thing",)))

    assert closure.literal_imports(text) == expected
    entry = Path(os.environ["PCS_HOME"]) / "scans" / digest[:2] / f"{digest}.json"
    stored = json.loads(entry.read_text())
    assert stored["scripts"] == ["prepare.py"]

    # a new process reads the entry instead of parsing: shown by an entry saying otherwise
    closure._SCANS.pop(digest)
    entry.write_text(json.dumps({**stored, "imports": [[0, "numpy", []]]}))
    assert closure.literal_imports(text) == ((0, "numpy", ()),)

    # an entry cut short (or of another format) is scanned again and rewritten
    closure._SCANS.pop(digest)
    entry.write_text('{"pcs_format": 1, "imp')
    assert closure.literal_imports(text) == expected
    assert closure.script_literals(text) == ("prepare.py",)
    assert json.loads(entry.read_text())["imports"] == [[0, "json", []], [1, "sibling", ["thing"]]]

    small = "import json\n"
    small_digest = sha256_bytes(small.encode())
    closure._SCANS.pop(small_digest, None)
    assert closure.literal_imports(small) == ((0, "json", ()),)
    assert not (entry.parent.parent / small_digest[:2] / f"{small_digest}.json").exists()
def test_the_module_index_holds_while_another_thread_imports(tmp_path, monkeypatch):
    """A thread importing while a session looks at sys.modules (a sweep used to preload
    matplotlib beside its serial trials): the look never fails, and every module it saw is
    classified."""
    import gc
    import threading

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(1500):
        (folder / f"racemod_{i}.py").write_text(f"X = {i}\n")
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()

    class Cycle:  # garbage whose collection runs Python code (a thread switch can follow)
        def __del__(self):
            pass

    done = threading.Event()

    def importer():
        try:
            for i in range(1500):
                importlib.import_module(f"racemod_{i}")
                a, b = Cycle(), Cycle()
                a.other, b.other = b, a
        finally:
            done.set()

    index = closure._ModuleIndex()
    index.refresh()
    old_threshold = gc.get_threshold()
    gc.set_threshold(50)  # collect often, inside the copy if it makes objects
    try:
        thread = threading.Thread(target=importer)
        thread.start()
        while not done.is_set():
            index.refresh()
        thread.join()
    finally:
        gc.set_threshold(*old_threshold)
        for i in range(1500):
            sys.modules.pop(f"racemod_{i}", None)
    index.refresh()
    assert index._seen == dict(sys.modules)
