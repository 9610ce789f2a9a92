"""What is volatile by design in a run's outputs, removed before they are compared.

Each rule removes something a deterministic run still changes from one run to
the next (a date, a random id, a memory address), never anything the code
computed. A rule has a name, and the report says which rules changed the
outputs it compared ("compared after removing: figure dates"). ``pcs diff
--raw`` compares bytes, with no rule.

The rules:

- ``figure dates``: ``<dc:date>`` in SVG metadata, ``/CreationDate`` and
  ``/ModDate`` in PDF, ``tIME`` and date/time text chunks in PNG;
- ``figure ids``: the ids matplotlib draws at random into an SVG (clip paths,
  glyphs, markers) and their references, renumbered in order of appearance;
- ``gzip times``: the header's mtime and file name (the content is compared);
- ``zip member times``: member dates and extra fields (names and contents are
  compared, each member under these same rules);
- ``model ids``: an ``MLmodel`` file's ``model_uuid``, ``utc_time_created``,
  ``run_id``, ``model_id`` and ``artifact_path``, and MLflow ids in its other values;
- ``sklearn HTML ids``: ``sk-container-id-N`` / ``sk-estimator-id-N`` in HTML;
- ``MLflow links``: the "View run ... at:" and "View experiment at:" lines
  MLflow prints when a run ends against a tracking server;
- ``object addresses``: ``0x7f...`` in ``<... at 0x...>`` reprs (params, text);
- ``image names``: ``log_image(key=, step=)`` file names carry a timestamp and
  a uuid; the images are compared by key and step;
- ``requirement order``: the order of the requirements MLflow infers for a
  logged model (``requirements.txt``, ``conda.yaml``, ``python_env.yaml``) varies
  from run to run; the lists are compared sorted;
- ``code folder paths``: the folder the code ran from, printed by it
  (``Path(__file__).parent``): a rerun of the recorded code runs its snapshot
  from pcs's cache, so each run's code folder and the cached snapshot folders
  are written ``<code folder>`` in captured output (a path *inside* the folder
  is kept, so printing another file still differs).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
from collections.abc import Iterable

__all__ = ["RULES", "code_folders_as_placeholder", "normalise_file", "normalise_text", "normalise_artifact_paths"]

RULES = (
    "figure dates",
    "figure ids",
    "gzip times",
    "zip member times",
    "model ids",
    "sklearn HTML ids",
    "MLflow links",
    "object addresses",
    "image names",
    "requirement order",
    "code folder paths",
)

# a zip or gzip member larger than this is compared by its bytes as stored
_MAX_UNPACKED = 512 * 1024 * 1024

_SVG_DATE = re.compile(rb"<dc:date>[^<]*</dc:date>")
_SVG_ID = re.compile(rb'id="([A-Za-z])([0-9a-f]{10})"')  # matplotlib: a letter + 10 hex digits
_PDF_DATE = re.compile(rb"/(CreationDate|ModDate) *\(D:[^)]*\)")
_MLFLOW_LINK = re.compile(r"^.*View (run .* at|experiment at): \S+/#/experiments/\S*\n?", re.MULTILINE)
_ADDRESS = re.compile(r"( at | object at |<\w+ at )0x[0-9a-fA-F]+")
_SK_ID = re.compile(r"sk-(container|estimator)-id-\d+")
_MLFLOW_ID = re.compile(r"\bm-[0-9a-f]{32}\b|\b[0-9a-f]{32}\b")
_IMAGE_NAME = re.compile(
    r"^(?P<dir>(?:.*/)?images/)(?P<key>.+?)[+%]step[+%](?P<step>-?\d+)[+%]timestamp[+%]\d+"
    r"[+%][0-9a-f-]{36}(?P<compressed>[+%]compressed)?(?P<ext>\.\w+)$"
)
_MLMODEL_VOLATILE = ("model_uuid", "utc_time_created", "run_id", "model_id", "artifact_path")


def normalise_text(text: str, rules: Iterable[str] = ("MLflow links", "object addresses")) -> tuple[str, list[str]]:
    """``text`` with the volatile parts named by ``rules`` removed; the rules that changed it."""
    used: list[str] = []
    for rule in rules:
        if rule == "MLflow links":
            new = _MLFLOW_LINK.sub("", text)
        elif rule == "object addresses":
            new = _ADDRESS.sub(r"\g<1>0x…", text)
        elif rule == "sklearn HTML ids":
            new = _SK_ID.sub(r"sk-\g<1>-id-N", text)
        else:
            raise ValueError(f"not a text rule: {rule!r}")
        if new != text:
            used.append(rule)
        text = new
    return text, used


def normalise_file(path: str, data: bytes) -> tuple[bytes, list[str]]:
    """The bytes of artifact ``path`` to compare, and the names of the rules that changed them.

    Args:
        path: the artifact's path in the run (its name picks the rules).
        data: its content.
    """
    name = path.rsplit("/", 1)[-1].lower()
    import zipfile  # here: zipfile is slow to import, and ``import pcs`` stays fast

    try:
        if name == "mlmodel":
            return _mlmodel(data)
        if name == "requirements.txt":
            lines = data.decode("utf-8").splitlines()
            return _apply(data, "requirement order", lambda d: "\n".join(sorted(lines)).encode())
        if name in ("conda.yaml", "python_env.yaml"):
            return _environment_yaml(data)
        if name.endswith(".svg"):
            return _svg(data)
        if name.endswith(".pdf"):
            return _apply(data, "figure dates", lambda d: _PDF_DATE.sub(rb"/\1 (D:)", d))
        if name.endswith(".png") and data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _apply(data, "figure dates", _png_without_dates)
        if data[:2] == b"\x1f\x8b":
            return _gzip(data)
        if data[:4] == b"PK\x03\x04" and zipfile.is_zipfile(io.BytesIO(data)):
            return _zip(data, skops=name.endswith(".skops"))
        if name.endswith((".html", ".htm")):
            text, used = normalise_text(data.decode("utf-8", "surrogateescape"), ("sklearn HTML ids",))
            return text.encode("utf-8", "surrogateescape"), used
    except Exception:  # noqa: BLE001 - not what its name says (a bad zip, gzip, PNG): compared as bytes
        pass
    return data, []


def normalise_artifact_paths(paths: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """A comparable name for each artifact path (images by key and step); the rules used.

    Returns ``{comparable name: path}``. Two images at one key and step are
    told apart by their order of logging (their timestamp).
    """
    out: dict[str, str] = {}
    used: list[str] = []
    renamed = []
    for path in paths:
        match = _IMAGE_NAME.match(path)
        if match is None:
            out[path] = path
            continue
        stamp = int(re.search(r"timestamp[+%](\d+)", path).group(1))  # type: ignore[union-attr]
        renamed.append((stamp, path, match))
    for _, path, match in sorted(renamed):
        base = (
            f"{match['dir']}{match['key']} step {match['step']}"
            f"{' compressed' if match['compressed'] else ''}"
        )
        name, n = f"{base}{match['ext']}", 1
        while name in out:
            n += 1
            name = f"{base} #{n}{match['ext']}"
        out[name] = path
        if "image names" not in used:
            used.append("image names")
    return out, used


def _apply(data: bytes, rule: str, fn) -> tuple[bytes, list[str]]:  # type: ignore[no-untyped-def]
    new = fn(data)
    return new, ([rule] if new != data else [])


def _svg(data: bytes) -> tuple[bytes, list[str]]:
    used = []
    new = _SVG_DATE.sub(b"<dc:date></dc:date>", data)
    if new != data:
        used.append("figure dates")
    ids: dict[bytes, bytes] = {}
    for match in _SVG_ID.finditer(new):
        ids.setdefault(match.group(1) + match.group(2), b"%s_%d" % (match.group(1), len(ids) + 1))
    if ids:
        pattern = re.compile(b"|".join(re.escape(k) for k in sorted(ids, key=len, reverse=True)))
        renumbered = pattern.sub(lambda m: ids[m.group(0)], new)
        if renumbered != new:
            used.append("figure ids")
        new = renumbered
    return new, used


def _png_without_dates(data: bytes) -> bytes:
    out = [data[:8]]
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos : pos + 12 + length]
        pos += 12 + length
        if kind == b"tIME":
            continue
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            keyword = chunk[8:].split(b"\0", 1)[0].lower()
            if b"date" in keyword or b"time" in keyword:
                continue
        out.append(chunk)
    return b"".join(out)


def _gzip(data: bytes) -> tuple[bytes, list[str]]:
    import gzip

    digest = hashlib.sha256()
    size = 0
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > _MAX_UNPACKED:
                return data, []
            digest.update(chunk)
    new = b"gzip content sha256 " + digest.hexdigest().encode()
    # the header (bytes 4-8: mtime; then maybe a file name) is all that is dropped
    return new, ["gzip times"]


def _zip(data: bytes, skops: bool = False) -> tuple[bytes, list[str]]:
    import zipfile

    used: list[str] = ["zip member times"]
    members: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        total = 0
        for info in archive.infolist():
            total += info.file_size
            if total > _MAX_UNPACKED:
                return data, []
            members[info.filename] = archive.read(info)
    if skops and "schema.json" in members:
        members, renumbered = _skops_ids(members)
        if renumbered:
            used.append("object addresses")
    lines = []
    for name in sorted(members):
        content, inner = normalise_file(name, members[name])
        used.extend(r for r in inner if r not in used)
        lines.append(f"{name} {hashlib.sha256(content).hexdigest()}".encode())
    return b"zip\n" + b"\n".join(lines), used


_SKOPS_ID = re.compile(rb'("__id__": |"file": ")(\d+)')


def _skops_ids(members: dict[str, bytes]) -> tuple[dict[str, bytes], bool]:
    """A skops file names objects by their ``id()`` (a memory address): renumber in order of appearance."""
    ids: dict[bytes, bytes] = {}
    for match in _SKOPS_ID.finditer(members["schema.json"]):
        ids.setdefault(match.group(2), b"%d" % (len(ids) + 1))
    if not ids:
        return members, False
    out = {"schema.json": _SKOPS_ID.sub(lambda m: m.group(1) + ids[m.group(2)], members["schema.json"])}
    for name, content in members.items():
        if name == "schema.json":
            continue
        stem, dot, ext = name.partition(".")
        key = stem.encode()
        out[(ids[key].decode() + dot + ext) if key in ids else name] = content
    return out, True


def _mlmodel(data: bytes) -> tuple[bytes, list[str]]:
    import yaml

    spec = yaml.safe_load(data.decode("utf-8"))
    if not isinstance(spec, dict):
        return data, []
    removed = [key for key in _MLMODEL_VOLATILE if spec.pop(key, None) is not None]
    text, ids = _MLFLOW_ID.subn("<id>", yaml.safe_dump(spec, sort_keys=True))
    return text.encode("utf-8"), (["model ids"] if removed or ids else [])


def _environment_yaml(data: bytes) -> tuple[bytes, list[str]]:
    import yaml

    spec = yaml.safe_load(data.decode("utf-8"))
    ordered = yaml.safe_dump(spec, sort_keys=True).encode()
    sorted_lists = yaml.safe_dump(_sorted_lists(spec), sort_keys=True).encode()
    return sorted_lists, (["requirement order"] if sorted_lists != ordered else [])


def _sorted_lists(value: object) -> object:
    """``value`` with every list of strings sorted (requirements), recursively."""
    if isinstance(value, dict):
        return {k: _sorted_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_sorted_lists(v) for v in value]
        if all(isinstance(v, str) for v in items):
            return sorted(items)  # type: ignore[type-var]
        return items
    return value


def code_folders_as_placeholder(
    text: str, folders: Iterable[str], snapshots: str | os.PathLike[str] | None = None
) -> tuple[str, list[str]]:
    """``text`` with each code folder written as ``<code folder>``; the rule names used.

    Args:
        text: captured output.
        folders: the folders the runs' code ran from (absolute).
        snapshots: pcs's cache of source snapshots (``PCS_HOME/sources``): any
            snapshot folder in it (``<hex digest>``, ``git-<hex>``) is a code folder too.

    Only whole path parts match: ``/work/src`` is replaced in ``/work/src/x.csv``
    but not in ``/work/srcs``.
    """
    out = text
    for folder in sorted({f.rstrip("/") for f in folders if len(f.rstrip("/")) > 1}, key=len, reverse=True):
        out = re.sub(re.escape(folder) + r"(?![^/\s'\")\]:,;])", "<code folder>", out)
    if snapshots is not None:
        pattern = re.escape(os.fspath(snapshots).rstrip("/")) + r"/(?:git-)?[0-9a-f]{36,40}(?![0-9a-zA-Z_.-])"
        out = re.sub(pattern, "<code folder>", out)
    return out, (["code folder paths"] if out != text else [])
