"""Atomic file writing: a reader never sees a half-written output, and existing files are kept unless asked.

Every writer in the package goes through :func:`atomic_path`: the data is written to a temporary file in the
target's own folder (same file system, so the final rename is atomic) and moved into place only once it is
complete and flushed to disk. A crash or an exception leaves the target untouched and removes the temporary
file. :func:`atomic_files` does the same for a set of files that belong together (one case's outputs): all of
them are published, or none.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

__all__ = [
    "OutputExistsError",
    "atomic_files",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "refuse_overwrite",
]

K = TypeVar("K")


class OutputExistsError(FileExistsError):
    """An output file exists and overwriting was not asked for.

    The message speaks to a library caller (``overwrite=True``); a front end names its own switch (the command
    line's ``--overwrite``) from :attr:`path` instead of repeating it.

    Attributes:
        path: the existing file.
    """

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


def refuse_overwrite(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` when ``path`` exists and overwriting was not asked for.

    Raises:
        OutputExistsError: (a FileExistsError) ``path`` exists (a dangling symlink counts) and ``overwrite`` is
            False.
    """
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExistsError(
            path, f"{path} already exists; refusing to overwrite it (pass overwrite=True to replace it)"
        )


def _temp_suffix(path: Path) -> str:
    """Keep the extension (".nii.gz" included) so that writers choosing a format by name still work."""
    if path.suffix == ".gz" and len(path.suffixes) >= 2:
        return "".join(path.suffixes[-2:])
    return path.suffix


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the temp file onto ``path``; without overwrite, never replace a file that appeared."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic and fails if the target exists
    except FileExistsError:
        raise OutputExistsError(
            path, f"{path} appeared while it was being written; refusing to overwrite it (pass overwrite=True)"
        ) from None
    except OSError:  # file systems without hard links
        refuse_overwrite(path, overwrite)
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; write it completely, then it replaces ``path`` on exit.

    The parent folder is created when missing. With ``overwrite=False`` an existing target raises
    FileExistsError before anything is written. On an exception the temporary file is removed.

    Args:
        path: the target file.
        overwrite: replace an existing target.

    Yields:
        The temporary file to write, in the target's folder and with its extension.

    Raises:
        FileExistsError: the target exists, or appeared while it was being written, and ``overwrite`` is False.
    """
    path = Path(path)
    refuse_overwrite(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{_temp_suffix(path)}"
    tmp.touch(exist_ok=False)  # reserve the name with default permissions (umask), unlike mkstemp's 0600
    try:
        yield tmp
        _fsync(tmp)
        _publish(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    return atomic_write_bytes(path, text.encode(encoding), overwrite=overwrite)


@contextlib.contextmanager
def atomic_files(paths: Mapping[K, Path], *, overwrite: bool = False) -> Iterator[dict[K, Path]]:
    """All or none: yield a temporary path for each target; on a clean exit all of them move into place.

    Write every yielded path completely inside the ``with`` block. On exit they are published in the
    mapping's order (put the file whose presence means "done" last). If the block raises, or publishing
    fails part-way, nothing of this call remains: the temporary files are removed, files it had already
    published are removed, and files it had replaced (``overwrite=True``) are put back, so a target folder
    holds either the old set of files or the new one. Parent folders are created when missing (and are not
    removed again: the caller knows whether it made them).

    Args:
        paths: key -> target file; targets must be distinct.
        overwrite: replace existing targets (otherwise an existing target raises before anything is written).

    Yields:
        key -> the temporary file to write, beside its target and with its extension (writers that choose a
        format by the name still work). A writer may create it or replace it.

    Raises:
        OutputExistsError: a target exists, or appeared while the files were written, and ``overwrite`` is
            False.
        OSError: a file could not be moved into place (everything is rolled back first).
    """
    targets = {key: Path(p) for key, p in paths.items()}
    for path in targets.values():
        refuse_overwrite(path, overwrite)
    token = secrets.token_hex(6)
    temps: dict[K, Path] = {}
    for key, path in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        temps[key] = path.parent / f".{path.name}.{token}.tmp{_temp_suffix(path)}"
    published: list[tuple[Path, Path | None]] = []  # (target, backup of the file it replaced, or None)
    try:
        yield dict(temps)
        for key, path in targets.items():
            published.append((path, _publish_keeping_backup(temps[key], path, overwrite, token)))
    except BaseException:
        for path, backup in reversed(published):
            if backup is not None:
                os.replace(backup, path)  # the user's previous file comes back
            else:
                path.unlink(missing_ok=True)
        raise
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    for _, backup in published:
        if backup is not None:
            backup.unlink(missing_ok=True)


def _publish_keeping_backup(tmp: Path, path: Path, overwrite: bool, token: str) -> Path | None:
    """Move ``tmp`` onto ``path``; return a hard link to the file it replaced (for a rollback), or None."""
    if not tmp.is_file():
        raise FileNotFoundError(f"{tmp} was not written (the output {path.name} has no content)")
    backup = None
    if overwrite and (path.exists() or path.is_symlink()):
        backup = path.parent / f".{path.name}.{token}.old"
        try:
            os.link(path, backup, follow_symlinks=False)
        except OSError:  # file systems without hard links: move it aside instead
            os.replace(path, backup)
    try:
        _fsync(tmp)
        _publish(tmp, path, overwrite)
    except BaseException:
        if backup is not None:
            os.replace(backup, path)  # the same file (a link) or the one moved aside: either way it is back
        raise
    return backup
