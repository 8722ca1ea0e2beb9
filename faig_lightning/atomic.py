"""Atomic file writes: a result file either exists complete or not at all.

A write that fails on a full disk raises ``OSError(ENOSPC)`` naming the file, also where the writing library
hides the reason (``torch.save`` raises a bare RuntimeError): the command then ends in one line naming the folder.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched; a full disk or quota (also
    when the writer hides it: any exception while no space is left) is an ``OSError`` naming ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; results should read like any other file
        os.replace(tmp_path, target)
    except Exception as exc:
        code = exc.errno if isinstance(exc, OSError) else errno.ENOSPC if _no_space_left(target.parent) else None
        if code in (errno.ENOSPC, errno.EDQUOT) and not getattr(exc, "filename", None):
            raise OSError(code, os.strerror(code), str(target)) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _no_space_left(folder: Path) -> bool:
    """True when the file system holding ``folder`` has no block left for this user."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text))
