"""Predictions files: the one reader and the write discipline every run shares.

A predictions file is JSONL, one record per line, appended batch by batch and fsync'ed. A run
killed mid-write leaves a torn last line; every reader cuts it (it is re-predicted), so a file on
disk always holds whole predictions only. ``openie extract``, grid cells and the fit runners of
trainable methods read and write through here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from openie.errors import OpenIEError
from openie.records import Record


class PredictionsError(OpenIEError, ValueError):
    """A predictions file that cannot be written or continued as asked."""


def read_predictions(path: str | Path) -> dict[str, Record]:
    """Predictions written so far, by id; a torn last line (a killed run) is cut off the file."""
    path = Path(path)
    done: dict[str, Record] = {}
    if not path.is_file():
        return done
    good = 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                record = Record.from_dict(json.loads(raw))
            except (ValueError, TypeError, KeyError):
                break
            done[record.id] = record
            good += len(raw)
    if good < path.stat().st_size:
        with path.open("r+b") as fh:
            fh.truncate(good)
    return done


def lock(fh: IO[bytes], path: Path) -> None:
    """An exclusive lock on an open output (POSIX): a second run writing the same file is refused."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise PredictionsError(f"{path} is being written by another running extraction") from None


def truncate_partial_line(fh: IO[bytes]) -> int:
    """Cut everything after the last newline (a write interrupted mid-line); returns bytes cut."""
    size = fh.seek(0, os.SEEK_END)
    pos = size
    while pos > 0:
        step = min(1 << 16, pos)
        fh.seek(pos - step)
        chunk = fh.read(step)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            pos = pos - step + nl + 1
            break
        pos -= step
    if pos < size:
        fh.truncate(pos)
        fh.flush()
        os.fsync(fh.fileno())
    return size - pos


def keep_lines(path: Path, n: int) -> None:
    """Cut ``path`` after its first ``n`` complete lines (a resumed run rewrites what follows)."""
    if not path.is_file():
        return
    keep = 0
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh):
            if i >= n or not raw.endswith(b"\n"):
                break
            keep += len(raw)
    with open(path, "r+b") as fh:
        fh.truncate(keep)


def append_predictions(fh: IO[bytes], predictions: Sequence[Record]) -> None:
    """One batch, flushed and fsync'ed: what is on disk after a kill is whole batches."""
    fh.write("".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in predictions).encode())
    fh.flush()
    os.fsync(fh.fileno())


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write-then-rename: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


__all__ = ["PredictionsError", "append_predictions", "keep_lines", "lock", "read_predictions", "truncate_partial_line",
           "write_json_atomic"]
