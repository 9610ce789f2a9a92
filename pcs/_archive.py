"""Pack folders into ``.tar.gz`` archives and unpack untrusted ones safely.

One place for every archive pcs reads or writes: run artifacts sent to and
from the registry server, and exported bundles. Unpacking treats the archive
as hostile: it refuses absolute paths, ``..`` components, links and device
files, detects truncated or corrupt streams (the gzip checksum is verified),
caps the unpacked size, and extracts into a temporary folder next to the
destination that is renamed into place only when everything succeeded — so a
refused archive leaves nothing behind.

Temporary files and folders carry the pid of the process that made them
(``.<name>.pcs-<pid>-<purpose>-<random>``, see :func:`temp_name`), so that
what a killed process left behind can be swept by the next one
(:func:`sweep_stale_temp`).

Example::

    data = make_tar_gz("mlruns/0/abc/artifacts")
    safe_extract_tar(io.BytesIO(data), "restored/abc")
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import stat
import tarfile
import uuid
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Protocol

from pcs._liveness import pid_alive
from pcs.errors import BundleError

__all__ = [
    "RUN_ID_PATTERN",
    "check_run_id",
    "make_tar_gz",
    "write_tar_gz",
    "safe_extract_tar",
    "temp_name",
    "temp_name_pid",
    "sweep_stale_temp",
]

# MLflow run ids are 32 hex digits; allow a little more, but never anything that
# could change the meaning of a path (no '/', '.', '\\').
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_CHUNK = 1 << 20
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error)
# '.<target>.pcs-<pid>-<purpose>-<random>', '.pcs-<pid>-…' (hidden: a folder of run ids or
# cache entries never holds such a name) or 'pcs-<pid>-…' (in the system temp folder;
# tempfile.mkdtemp(prefix='pcs-<pid>-<purpose>-') makes those too)
_TEMP_NAME = re.compile(r"^(\.(?:.+\.)?)?pcs-(\d+)-[a-z]+-[0-9a-z_]{6,}$", re.DOTALL)
# extraction errors caused by the archive itself (e.g. a file member named like
# an earlier directory), as opposed to the disk being full or unwritable
_LAYOUT_ERRORS = (FileExistsError, NotADirectoryError, IsADirectoryError)


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is safe to use as a folder name, else raise BundleError."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise BundleError(
            f"{run_id!r} is not a valid run id: a run id is 1-64 letters, digits, '_' or "
            "'-' (MLflow run ids are 32 hex digits). Pass the id of the run whose artifacts "
            "you mean."
        )
    return run_id


# -- temporary names -----------------------------------------------------------------


def temp_name(purpose: str, target: str | None = None, *, hidden: bool = True) -> str:
    """A pid-marked name for a temporary file or folder (``pcs-<pid>-<purpose>-<random>``).

    Args:
        purpose: a lowercase word saying what the temp is for (``upload``, ``extract``).
        target: the name of the file or folder the temp will become or replace, if any.
        hidden: start the name with a dot. Only hidden names are swept from a
            folder by default (:func:`sweep_stale_temp`); use ``hidden=False``
            for temps in the system temp folder.

    Returns:
        ``.<target>.pcs-<pid>-<purpose>-<random>`` with a target,
        ``.pcs-<pid>-<purpose>-<random>`` without, and no leading dot when not hidden.
    """
    if not re.fullmatch(r"[a-z]+", purpose):
        raise ValueError(f"temp purpose {purpose!r} must be lowercase letters")
    marker = f"pcs-{os.getpid()}-{purpose}-{uuid.uuid4().hex}"
    # cut long targets: the whole name must stay within the 255 bytes file systems allow
    short = target.encode()[:100].decode(errors="ignore") if target else ""
    if short:
        return f".{short}.{marker}" if hidden else f"{short}.{marker}"
    return f".{marker}" if hidden else marker


def temp_name_pid(name: str, *, hidden_only: bool = True) -> int | None:
    """The pid in a name made by :func:`temp_name`, or None for any other name.

    Args:
        name: a file or folder name.
        hidden_only: only names that start with a dot count, so a run id or
            cache entry that happens to look like ``pcs-1-x-abcdef`` is never one.
    """
    match = _TEMP_NAME.match(name)
    if match is None or (hidden_only and match.group(1) is None):
        return None
    return int(match.group(2))


def sweep_stale_temp(folder: str | os.PathLike[str], *, include_own: bool = False,
                     hidden_only: bool = True) -> list[Path]:
    """Remove the temps in ``folder`` (not below it) whose creating process is gone.

    Only names made by :func:`temp_name` are touched. A process that just
    started may pass ``include_own=True``: temps marked with its own pid were
    then left by an earlier process that had the same pid (a restarted
    container).

    Args:
        folder: the folder to sweep; a missing folder holds nothing.
        include_own: also remove temps marked with this process's pid.
        hidden_only: leave names without a leading dot alone; pass False only
            for a folder that holds nothing but temps (the system temp folder).

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    own = os.getpid()
    for entry in entries:
        pid = temp_name_pid(entry.name, hidden_only=hidden_only)
        if pid is None or (pid == own and not include_own) or (pid != own and (pid <= 0 or pid_alive(pid))):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if not path.exists():
            removed.append(path)
    return removed


# -- packing -------------------------------------------------------------------------


def make_tar_gz(folder: str | os.PathLike[str]) -> bytes:
    """The contents of ``folder`` as a ``.tar.gz`` archive, in memory.

    Member names are relative to ``folder``. For large folders, stream into a
    file with :func:`write_tar_gz` instead.

    Raises:
        BundleError: ``folder`` is not a folder, or holds a symlink or a
            special file, which pcs does not pack.
    """
    buffer = io.BytesIO()
    write_tar_gz(folder, buffer)
    return buffer.getvalue()


def write_tar_gz(folder: str | os.PathLike[str], fileobj: IO[bytes]) -> None:
    """Write the contents of ``folder`` as a ``.tar.gz`` archive to ``fileobj``.

    The archive is reproducible for equal content: entries are sorted, owners
    are dropped and the gzip header carries no timestamp.
    """
    root = Path(folder)
    if not root.is_dir():
        raise BundleError(
            f"Cannot pack {root}: it is not a folder. Pass the folder that holds the files."
        )
    # mtime=0 and no file name keep the gzip header free of varying data
    with gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in _walk(root):
                name = path.relative_to(root).as_posix()
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isdir():
                    info.mode = 0o755
                    tar.addfile(info)
                else:
                    info.mode = 0o755 if info.mode & 0o111 else 0o644
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)


def _walk(root: Path) -> list[Path]:
    """Every folder and file under ``root``, sorted; refuses links and special files."""
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = Path(current) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(
                    f"Cannot pack {path}: it is a symlink, and pcs does not pack links "
                    "because they can point outside the folder. Replace it with a copy of "
                    "its target."
                )
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise BundleError(
                    f"Cannot pack {path}: it is neither a regular file nor a folder "
                    "(a device, socket or pipe). Remove it from the folder."
                )
            found.append(path)
    return found


# -- unpacking -----------------------------------------------------------------------


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def safe_extract_tar(
    archive: str | os.PathLike[str] | bytes | IO[bytes] | _Readable,
    dest: str | os.PathLike[str],
    *,
    replace: bool = False,
    max_size: int | None = None,
) -> Path:
    """Unpack an untrusted ``.tar.gz`` into the folder ``dest``, all or nothing.

    Args:
        archive: the path of a ``.tar.gz`` file, its bytes, or a binary file
            object positioned at its start (only its ``read`` is used, front to
            back, so a network stream works).
        dest: the folder to create. It must not exist (an empty folder is
            fine) unless ``replace`` is true.
        replace: swap out an existing ``dest`` once the new content is
            complete.
        max_size: refuse archives that unpack to more than this many bytes.

    Returns:
        ``dest`` as a Path.

    Raises:
        BundleError: the archive is not a gzip tar, is truncated or corrupt,
            holds an absolute path, a ``..`` component, a link or a device
            file, unpacks to more than ``max_size`` bytes, or ``dest`` exists.
            Nothing is written to ``dest`` then.
    """
    dest = Path(dest)
    if not replace and dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise BundleError(
            f"Cannot unpack into {dest}: it already exists and is not an empty folder. "
            "Choose a new folder, or remove the old one first."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    # next to dest, so the final rename stays on one file system
    staging = dest.parent / temp_name("extract", dest.name)
    staging.mkdir()
    try:
        if isinstance(archive, (bytes, bytearray)):
            _extract_all(io.BytesIO(archive), staging, max_size)
        elif isinstance(archive, (str, os.PathLike)):
            with open(archive, "rb") as fh:
                _extract_all(fh, staging, max_size)
        else:
            _extract_all(archive, staging, max_size)
        _move_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


class _LimitedReader:
    """A read-only file object that refuses to yield more than ``limit`` bytes."""

    def __init__(self, raw: IO[bytes], limit: int | None) -> None:
        self._raw = raw
        self._limit = limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        if self._limit is not None and self.count > self._limit:
            raise BundleError(
                f"The archive unpacks to more than {self._limit} bytes, the most accepted "
                "for it (far more than its own size suggests a decompression bomb). Split "
                "the artifacts into smaller bundles; on a registry server, raise "
                "'pcs-registry serve --max-upload-mb'."
            )
        return data


def _extract_all(raw: BinaryIO | IO[bytes] | _Readable, target: Path,
                 max_size: int | None) -> None:
    reader = _LimitedReader(gzip.GzipFile(fileobj=raw, mode="rb"), max_size)  # type: ignore[arg-type]
    try:
        # "r|" reads the stream front to back, member by member
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                relative = _checked_member_path(member)
                if relative is None:
                    continue
                out = target.joinpath(*relative.parts)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isreg() members always have data
                    raise BundleError(f"Archive member {member.name!r} has no data.")
                with open(out, "wb") as fh:
                    shutil.copyfileobj(source, fh, _CHUNK)
                out.chmod(0o755 if member.mode & 0o111 else 0o644)
        # read to the very end, so gzip verifies its checksum and length trailer
        while reader.read(_CHUNK):
            pass
    except _ARCHIVE_ERRORS as exc:
        raise BundleError(
            f"The archive is not a complete .tar.gz file ({type(exc).__name__}: {exc}). "
            "It may be truncated or corrupt, or not gzip-compressed tar at all; create "
            "it again (e.g. with `tar czf`) and resend it."
        ) from None
    except _LAYOUT_ERRORS as exc:
        raise BundleError(
            f"The archive cannot be unpacked: two members clash ({exc}), e.g. a file "
            "and a folder with the same name. Create the archive from a plain folder."
        ) from None


def _checked_member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's relative path, or None for the archive root ('.')."""
    name = member.name
    if "\\" in name or "\x00" in name:
        raise BundleError(
            f"Refusing archive member {name!r}: its name holds a backslash or NUL byte, "
            "which would be read differently on other systems. Use plain '/'-separated "
            "relative paths."
        )
    path = PurePosixPath(name)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise BundleError(
            f"Refusing archive member {name!r}: it has an absolute path, which would be "
            "written outside the destination folder. Create the archive with relative "
            "paths (tar -C FOLDER -czf out.tar.gz .)."
        )
    if ".." in path.parts:
        raise BundleError(
            f"Refusing archive member {name!r}: it has a '..' component, which would be "
            "written outside the destination folder. Create the archive with paths "
            "inside the folder only."
        )
    if member.issym() or member.islnk():
        raise BundleError(
            f"Refusing archive member {name!r}: it is a {'symbolic' if member.issym() else 'hard'} "
            "link, which could point outside the destination folder. Archive the file "
            "itself instead of a link."
        )
    if not (member.isreg() or member.isdir()):
        raise BundleError(
            f"Refusing archive member {name!r}: it is a device, pipe or other special "
            "file. Artifacts may hold only regular files and folders."
        )
    if not path.parts:
        return None
    return path


def _move_into_place(staging: Path, dest: Path) -> None:
    """Rename ``staging`` to ``dest``, swapping out whatever ``dest`` held."""
    for _ in range(5):
        old: Path | None = None
        if dest.exists():
            old = dest.parent / temp_name("old", dest.name)
            try:
                dest.rename(old)
            except FileNotFoundError:  # someone else moved it away meanwhile
                old = None
        try:
            staging.rename(dest)
        except OSError:
            # another writer may have put its version in place between our renames
            raced = dest.exists()
            if old is not None:
                if raced:
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.rename(dest)  # a real failure: put the previous content back
            if raced:
                continue
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise BundleError(
        f"Could not move the unpacked archive into {dest}: other writers kept replacing "
        "it. Try again."
    )
