"""Atomic file writing: a reader never sees a half-written output, and existing files are kept unless asked.

Every writer in the package goes through :func:`atomic_path`: the data is written to a temporary file in the
target's own folder (same file system, so the final rename is atomic) and moved into place only once it is
complete and flushed to disk. A crash or an exception leaves the target untouched and removes the temporary
file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "refuse_overwrite"]


def refuse_overwrite(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise FileExistsError when ``path`` exists and overwriting was not asked for.

    Raises:
        FileExistsError: ``path`` exists (a dangling symlink counts) and ``overwrite`` is False.
    """
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (pass overwrite=True to replace it)")


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
        raise FileExistsError(
            f"{path} appeared while it was being written; refusing to overwrite it (pass overwrite=True)"
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
