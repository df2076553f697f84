"""Run folders: how every pipeline writes its files so that a crash never leaves half of one,
and never destroys a folder that is not its own.

Training (``train.py``), the R1 pipeline (``r1.py``) and the checkpoint writer (``checkpoint.py``)
all keep their results in a folder. They share these habits, written once here:

* ``atomic_path``: write beside the destination, flush to disk (``fsync``), then move it into
  place. A reader, or a run resumed after ``kill -9``, sees the old version or the new one, never
  a torn file. With ``directory=True`` the same holds for a whole folder: a checkpoint, or a
  converted model, is built aside and swapped in at the end.
* ``check_destination``: before writing into a folder, refuse one that holds files this writer
  did not make (another checkpoint, someone's notes), unless the user said ``--overwrite``.
* ``lock_folder``: one process at a time in a run folder (a second run is refused, not interleaved).
* ``read_text`` / ``read_json``: small input files (configs, indexes, state) read with limits:
  a regular file only (not a folder, a FIFO or ``/dev/zero``), at most a few megabytes, UTF-8, and
  every failure reported as one line naming the file.
* ``write_json``; ``append_jsonl`` / ``read_jsonl`` / ``rewrite_jsonl``: a log of one JSON object
  per line (``metrics.jsonl``). Appending is cheap; a run killed mid-line leaves a torn last line,
  which ``read_jsonl`` skips.
* ``save_figures``: matplotlib figures as PNGs, each written atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .validation import UserError

try:  # file locks: POSIX only; elsewhere two runs in one folder are not prevented
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TEMPORARY_PREFIX = ".tmp-"  # what an interrupted write leaves behind: never a finished file
LOCK_NAME = ".lock"
MAX_JSON_BYTES = 64 * 2**20  # the 671B checkpoint's index is ~9 MB; configs are a few kB
_UMASK = os.umask(0)  # read the process's umask (the only way is to set it) ...
os.umask(_UMASK)  # ... and put it back


class FolderError(UserError):
    """A destination that cannot be written: a file, someone else's folder, or a folder in use."""


def read_text(path: str | Path, max_bytes: int = MAX_JSON_BYTES, error: type[Exception] = UserError) -> str:
    """The UTF-8 text of a small regular file; ``error`` (one line, naming the file) for anything else.

    ``stat`` before ``open``: opening a FIFO would block until a writer appears, and ``/dev/zero``
    never ends, so only regular files are read, and at most ``max_bytes`` of them.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path} is not a regular file" + (" but a folder" if stat.S_ISDIR(info.st_mode) else ""))
    if info.st_size > max_bytes:
        raise error(f"{path} is {info.st_size:,} bytes, more than the {max_bytes:,} such a file may have")
    data = path.read_bytes()  # PermissionError (an OSError) is reported by the command line as it is
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{path} is not UTF-8 text (byte {problem.start}: {data[problem.start]:#04x})") from None


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES, error: type[Exception] = UserError) -> Any:
    """A JSON file read with ``read_text``'s limits; malformed or absurdly nested JSON is ``error`` too."""
    text = read_text(path, max_bytes, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(f"{path} is not valid JSON: {problem}") from None
    except RecursionError:
        raise error(f"{path} is not valid JSON: nested too deeply") from None


def _fsync(path: Path, folder: bool = False) -> None:
    """Flush a file, or a folder's list of entries (``folder``), to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if folder:  # some systems cannot open a folder; its files are synced all the same
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one step: Linux's ``renameat2(..., RENAME_EXCHANGE)``.

    False where the system or the file system cannot; the caller then uses two renames.
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _replace_folder(new: Path, path: Path) -> None:
    """Put the folder ``new`` at ``path``, whose previous contents (if any) are deleted."""
    try:
        os.replace(new, path)  # enough when path does not exist or is an empty folder
        return
    except OSError as problem:
        if problem.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if not _exchange(new, path):
        # Two renames: between them (microseconds) path does not exist; a kill there leaves the
        # previous folder under the temporary name.
        os.replace(path, new.with_name(new.name + "-old"))
        os.replace(new, path)
        new = new.with_name(new.name + "-old")
    shutil.rmtree(new)  # now the previous contents


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary file (or folder) beside ``path``; when the block succeeds, move it onto
    ``path``; when it fails, delete it. Readers see the old or the new version, never half of one.

    ``directory=True`` replaces a whole folder: an existing one at ``path`` is swapped out in one
    step and deleted (the caller decides, with ``check_destination``, whether it may be).
    Files get the permissions of any new file (some writers create them private, mode 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMPORARY_PREFIX}{path.name}-{os.getpid()}")
    if directory:
        _remove_dead_stagings(path)  # a whole checkpoint can be hundreds of GB: never leave one behind
        tmp.mkdir()
    try:
        yield tmp
        files = [Path(root) / name for root, _, names in os.walk(tmp) for name in names] if directory else [tmp]
        for written in files:
            os.chmod(written, 0o666 & ~_UMASK)
            _fsync(written)  # on disk before the rename makes it visible
        if directory:
            _fsync(tmp, folder=True)
            _replace_folder(tmp, path)
        else:
            os.replace(tmp, path)
        _fsync(path.parent, folder=True)  # the rename itself, durable across a power cut
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if directory else tmp.unlink(missing_ok=True)
        raise


def _remove_dead_stagings(path: Path) -> None:
    """Delete the folders that earlier writes of ``path`` staged beside it (``.tmp-NAME-PID``) and left
    behind when their process was killed; those of a process still running are its business."""
    pattern = re.compile(re.escape(f"{TEMPORARY_PREFIX}{path.name}-") + r"(\d+)(-old)?")
    for stale in path.parent.iterdir():
        match = pattern.fullmatch(stale.name)
        if match and stale.is_dir() and not _running(int(match.group(1))):
            shutil.rmtree(stale, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether a process with this id exists (ours counts: a staging folder of ours is stale too)."""
    if pid == os.getpid():
        return False
    if os.name == "nt":  # there os.kill would end the process: assume it runs
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (someone else's), or we cannot tell: leave it
    return True


def remove_folder(path: str | Path) -> None:
    """Delete a folder so that a kill midway leaves it whole or gone: rename it to a temporary
    name first (one step), then delete that."""
    path = Path(path)
    doomed = path.with_name(f"{TEMPORARY_PREFIX}{path.name}-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def check_destination(path: str | Path, ours: Iterable[str] = (), overwrite: bool = False,
                      overwrite_means: str = "replace the folder and everything in it") -> None:
    """Refuse to write into ``path`` when it is a file, or a folder holding an entry that matches
    none of ``ours`` (glob patterns of what this writer makes), unless ``overwrite``.

    A folder that does not exist yet, or is empty, is always fine. The error lists what is there and
    says what ``--overwrite`` would do (``overwrite_means``).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FolderError(f"{path} is a file, not a folder; choose a folder to write into")
    if overwrite or not path.is_dir():
        return
    patterns = [*ours, f"{TEMPORARY_PREFIX}*", LOCK_NAME]
    foreign = sorted(entry.name for entry in path.iterdir()
                     if not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in patterns))
    if foreign:
        shown = ", ".join(foreign[:4]) + (f", ... ({len(foreign) - 4} more)" if len(foreign) > 4 else "")
        raise FolderError(f"{path} already holds files this command did not write ({shown}); pass --overwrite "
                          f"(overwrite=True) to {overwrite_means}, or choose a new folder")


@contextlib.contextmanager
def lock_folder(folder: str | Path) -> Iterator[None]:
    """Hold ``folder/.lock`` for the block, so that a second process working on the same folder is
    refused instead of interleaving its writes with ours.

    An advisory ``flock``: the system releases it when the process ends, even by ``kill -9``, so a
    crash never leaves a stale lock. The file keeps the holder's process id, for the error message.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise FolderError(f"{folder} is in use by another minideepseek process (pid {holder}); "
                                  "wait for it to finish, or choose another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def remove_temporaries(folder: str | Path) -> None:
    """Delete what writes interrupted by a crash left in ``folder`` (``.tmp-*`` files and folders)."""
    for stale in Path(folder).glob(f"{TEMPORARY_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any, indent: int = 1) -> None:
    """``data`` as JSON in ``path``, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent) + "\n")


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Add one record as one line to a JSON-lines log."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records (JSON objects) of a JSON-lines log (none if it does not exist yet)."""
    path = Path(path)
    records = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a run killed while writing it
        if isinstance(record, dict):
            records.append(record)
    return records


def rewrite_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace a JSON-lines log with ``records``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))


def save_figures(folder: str | Path, figures: Mapping[str, Figure], dpi: int = 110) -> None:
    """Each ``{"name.png": figure}`` as a PNG in ``folder``, written atomically."""
    for name, figure in figures.items():
        with atomic_path(Path(folder) / name) as tmp:
            figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
