"""Writing a file the user named (--output, --save, --save-config): every OS refusal becomes an
error that names the path, says why, and what to do, before or instead of a traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from perfscale.errors import InvalidConfigError


def check_writable(path: str | Path, flag: str) -> Path:
    """The path as a Path if a file can be written there, else an InvalidConfigError naming `flag`.

    Checked up front so that a long run is not thrown away at its last step.
    """
    target = Path(path).expanduser()
    text = str(path)
    shown = text if len(text) <= 120 else text[:117] + "..."
    if not text.strip():
        raise InvalidConfigError(f"{flag} is empty: give a file path, e.g. {flag} out.json.")
    try:
        if target.is_dir():
            raise InvalidConfigError(f"{flag} {shown!r} is a folder: give a file path inside it, e.g. {flag} "
                                     f"{Path(shown) / 'out.json'}.")
        parent = target.parent
        if not parent.is_dir():
            raise InvalidConfigError(f"{flag} {shown!r}: folder {str(parent)[:120]!r} does not exist: create it first "
                                     "or choose another path.")
    except OSError as exc:
        raise InvalidConfigError(f"{flag} {shown!r} is not a usable path ({_reason(exc)}): choose a shorter or "
                                 "existing path.") from exc
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise InvalidConfigError(f"{flag} {shown!r} cannot be written (permission denied): choose a writable path.")
    return target


def write_text(path: str | Path, text: str, flag: str) -> Path:
    """Write `text` to the user's path; an OS refusal is an InvalidConfigError naming the flag."""
    target = check_writable(path, flag)
    try:
        target.write_text(text)
    except OSError as exc:
        shown = str(path)[:120]
        raise InvalidConfigError(f"Cannot write {flag} {shown!r}: {_reason(exc)}. Choose another path.") from exc
    return target


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long for the file system"
    return exc.strerror or type(exc).__name__
