"""Writing files so that nothing a user saved is ever half-written: the one atomic write;
and where aejax keeps what it caches for the user."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: it replaces ``path`` when the block ends
    without an error (readers see the old file or the new one, never half of one), and is
    removed when the write fails (a full disk leaves no ``.tmp`` files behind).

    The temporary name keeps ``path``'s suffix, which matplotlib and NumPy choose the format
    by, and is this writer's own (process and a random part): two commands writing the same
    file at once never write into one temporary file; the last to finish wins whole.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('done', ['a.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/aejax/...`` (default ``~/.cache/aejax/...``): the one root of what
    aejax caches (raw downloads, decoded arrays, compiled programs)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "aejax", *parts)


def os_error_behind(error: Exception, path: str | Path) -> OSError | None:
    """The filesystem error behind another library's exception (Orbax's, TensorStore's,
    TensorFlow's), as an ``OSError`` about ``path``, if its text names one; None otherwise."""
    text = str(error)
    for code, needles in (
        (errno.ENOSPC, ("No space left", "RESOURCE_EXHAUSTED", "ResourceExhausted")),
        (errno.EROFS, ("Read-only file system",)),
        (errno.EACCES, ("Permission denied", "PERMISSION_DENIED")),
        (errno.ENOTDIR, ("Not a directory",)),
    ):
        if any(n in text for n in needles):
            return OSError(code, os.strerror(code), str(path))
    return None
