"""Where a run may write: one set of rules for ``predict``, ``train``, the demo and the CLI.

Every run checks its destination *before* any work, so a mistake costs seconds, not hours:

- an output that is, contains or lies inside one of the run's inputs is refused (writing there
  would destroy what is being read);
- an existing output is refused unless ``overwrite`` (or ``resume`` for a Zarr store);
- with ``overwrite``, only a segarch result is ever deleted: a folder that is not one of our
  stores is refused, whatever the flags say;
- the folder it goes in must be writable (checked by creating and removing a file there), and an
  existing path must be of the right kind (a folder for a store, a file for a file);
- a store being written holds a lock (:class:`WriterLock`) so a second run cannot wipe or mix into it.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

__all__ = ["check_not_an_input", "check_writable", "check_output_file", "check_output_store", "is_segarch_store",
           "store_state", "WriterLock", "StoreBusy", "LOCK_NAME", "describe_os_error"]

#: The lock file inside a store's level-0 array folder (zarr does not look there).
LOCK_NAME = ".segarch-lock"


class StoreBusy(ValueError):
    """Another run holds the store's lock."""


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


def _inputs(inputs: Iterable[Any]) -> list[Path]:
    """The existing paths among ``inputs`` (lists of them too); arrays, names and other objects are not files."""
    paths = []
    for item in inputs:
        if isinstance(item, (list, tuple)):
            paths += _inputs(item)
        elif isinstance(item, (str, os.PathLike)) and os.fspath(item) and os.path.exists(item):
            paths.append(_resolved(item))
        else:  # an open Zarr array or group on a local store: its folder
            root = getattr(getattr(item, "store", None), "root", None)
            if isinstance(root, (str, os.PathLike)) and os.path.exists(root):
                path = getattr(item, "path", "") or ""
                paths.append(_resolved(os.path.join(os.fspath(root), path)))
    return paths


def check_not_an_input(out: str | os.PathLike, inputs: Iterable[Any], *, name: str = "out") -> None:
    """Refuse an output that is, contains or lies inside one of ``inputs`` (paths; arrays are skipped)."""
    target = _resolved(out)
    for source in _inputs(inputs):
        if target == source or (target.exists() and source.exists() and os.path.samefile(target, source)):
            relation = "is the input"
        elif source.is_relative_to(target):
            relation = "contains the input"
        elif target.is_relative_to(source):
            relation = "lies inside the input"
        else:
            continue
        raise ValueError(f"`{name}`={os.fspath(out)!r} {relation} {str(source)!r}: writing there would destroy "
                         "what is being read. Choose an output outside the input.")


def check_writable(out: str | os.PathLike, *, name: str = "out") -> None:
    """Refuse a destination whose folder cannot be written to (read-only, no permission, not a folder).

    The nearest existing folder above ``out`` is tried by creating and removing a file in it, which is
    what the run will do; permission bits alone miss read-only mounts.
    """
    target = _resolved(out)
    folder = target if target.is_dir() else target.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"`{name}`={os.fspath(out)!r} cannot be created: {str(folder)!r} is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".segarch-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"`{name}`={os.fspath(out)!r} cannot be written: {describe_os_error(err, folder)}") from None


def check_output_file(out: str | os.PathLike, *, overwrite: bool, inputs: Iterable[Any] = (), name: str = "out",
                      companions: Iterable[str | os.PathLike] = ()) -> None:
    """A file output (a ``.tif``, a ``.safetensors``): refuse an input, an existing file without
    ``overwrite``, a folder in its place, and an unwritable folder. ``companions`` are files written
    beside it (a training log), held to the same rule."""
    check_not_an_input(out, inputs, name=name)
    for path in [Path(out), *map(Path, companions)]:
        if path.is_dir():
            raise ValueError(f"`{name}`: {str(path)!r} is a folder; a file is written there. Choose a file name.")
        if path.exists() and not overwrite:
            raise ValueError(f"`{name}`: {str(path)!r} already exists; pass overwrite=True to replace it.")
    check_writable(out, name=name)


def is_segarch_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Zarr store that segarch's prediction wrote (finished or not)."""
    path = Path(path)
    for meta in ("zarr.json", ".zattrs"):
        try:
            attrs = json.loads((path / meta).read_text())
        except (OSError, ValueError):
            continue
        attrs = attrs.get("attributes", attrs) if meta == "zarr.json" else attrs
        if isinstance(attrs, dict) and "segarch" in attrs:
            return True
    return False


def store_state(path: str | os.PathLike) -> str:
    """What is at ``path``, for a caller deciding between a new run, a resume and a replace:

    - ``"absent"``: nothing, or an empty folder;
    - ``"complete"``: a segarch prediction store whose run finished;
    - ``"incomplete"``: a segarch prediction store whose run was cancelled or killed (``resume`` finishes it);
    - ``"other"``: anything else (a file, a foreign store), which segarch never deletes.
    """
    p = Path(path)
    if not p.exists() or (p.is_dir() and not any(p.iterdir())):
        return "absent"
    if not p.is_dir() or not is_segarch_store(p):
        return "other"
    try:
        import zarr

        group = zarr.open_group(str(p), mode="r")
        if "0" not in group and "complete" in group.attrs.get("segarch", {}):  # a group of label images (panoptic)
            return "complete" if group.attrs["segarch"]["complete"] is True else "incomplete"
        return "complete" if group["0"].attrs.get("complete") is True else "incomplete"
    except Exception:  # a store killed while its metadata was written: unfinished
        return "incomplete"


def check_output_store(out: str | os.PathLike, *, overwrite: bool, resume: bool, inputs: Iterable[Any] = (),
                       name: str = "out") -> str:
    """A Zarr store output. Returns ``"new"``, ``"resume"`` or ``"replace"``; refuses (``ValueError``) an
    input, a file in its place, an existing store without ``resume``/``overwrite``, deleting anything
    that is not a segarch result, and an unwritable folder."""
    check_not_an_input(out, inputs, name=name)
    path = Path(out)
    if path.suffix.lower() in (".tif", ".tiff"):  # a folder named x.tif would fool every tool that opens it
        raise ValueError(f"`{name}`={os.fspath(out)!r} names a TIFF, but a Zarr store (a folder, resumable block by "
                         f"block) is written there; pass a .zarr path and turn it into a .tif with "
                         f"segarch.io.convert.convert_store, or run `segarch predict IMAGE {path.name}`, which does "
                         "both.")
    if path.exists() and not path.is_dir():
        raise ValueError(f"`{name}`={os.fspath(out)!r} is a file; a Zarr store (a folder) is written there. "
                         "Choose another path.")
    state = "new"
    if path.is_dir() and any(path.iterdir()):
        ours = is_segarch_store(path)
        if resume and ours:
            state = "resume"
        elif resume:
            raise ValueError(f"`{name}`={os.fspath(out)!r} is not a segarch result, so there is nothing to resume; "
                             "choose another path.")
        elif not overwrite:
            raise ValueError(f"`{name}`={os.fspath(out)!r} already exists; pass resume=True to continue that run "
                             "or overwrite=True to replace it.")
        elif not ours:
            raise ValueError(f"`{name}`={os.fspath(out)!r} exists and is not a segarch result: refusing to delete it, "
                             "even with overwrite=True. Choose another path, or remove it yourself.")
        else:
            state = "replace"
        if ours and (path / "0").is_dir():
            WriterLock(path / "0", out).acquire().release()  # busy now: said at once (the run takes it for real)
    check_writable(out, name=name)
    return state


class WriterLock:
    """An exclusive, non-blocking lock on a store, held while a run writes into it.

    It is an OS file lock (``filelock``) on ``<store>/0/.segarch-lock``: it dies with the process, so a
    killed run never leaves a stale lock behind, and a second run is told at once instead of waiting.
    """

    def __init__(self, array_folder: str | os.PathLike, store: str | os.PathLike) -> None:
        from filelock import FileLock

        self.store = os.fspath(store)
        self.path = Path(array_folder) / LOCK_NAME
        self._lock = FileLock(str(self.path), timeout=0, thread_local=False, blocking=False)

    def acquire(self) -> "WriterLock":
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise StoreBusy(f"`out`={self.store!r} is being written by another run right now (its lock is held); "
                            "wait for it to finish, or choose another path.") from None
        return self

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def describe_os_error(err: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for an ``OSError``: what happened to which path, and what to do."""
    where = os.fspath(path) if path is not None else (err.filename or "")
    advice = {
        errno.ENOSPC: "the disk is full: free some space (a run writing a .zarr store resumes with --resume / "
                      "resume=True)",
        errno.EDQUOT: "the disk quota is exceeded: free some space",
        errno.EROFS: "the file system is read-only: choose a writable folder",
        errno.EACCES: "permission denied: choose a folder you can write to",
        errno.EPERM: "operation not permitted: choose a folder you can write to",
        errno.ENOENT: "no such file or folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder, not a file",
    }.get(err.errno, err.strerror or str(err))
    return f"{where!r}: {advice}." if where else f"{advice}."
