"""Where an export goes: a regular file replaced atomically, or standard output.

A file is written beside its target under a hidden temporary name, fsync'ed, then renamed
over it, so a failed or interrupted export leaves the previous file as it was. Refused, before
anything is written: the database itself or one of its companion files (-wal, -shm,
-journal; compared by device and inode, and by name for those not there yet), a directory,
a device, a FIFO or a socket. A symlink is followed: the file it points to is replaced (the
link stays a link). `-` streams to standard output, batch by batch, with no temporary file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bridge.core.errors import BridgeError

#: The export formats (bridge.export.writers writes them).
FORMATS = ("parquet", "csv", "json")

STDOUT = "-"
_COMPANIONS = ("", "-wal", "-shm", "-journal")
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked place to write an export (see the module's docstring).

    >>> Destination.of("-", None).streaming
    True
    """

    target: Path | None  # None: standard output
    shown: str  # what messages call it

    @property
    def streaming(self) -> bool:
        return self.target is None

    @classmethod
    def of(cls, output: str | Path, database: str | None) -> Destination:
        """Check `output` against the database's files; BridgeError naming what is wrong."""
        if str(output) == STDOUT:
            return cls(None, "standard output")
        given = Path(output)
        target = Path(os.path.realpath(given))  # a symlink: the file it points to
        if target.exists():
            kind = _KINDS.get(stat.S_IFMT(target.stat().st_mode))
            if kind is not None:
                raise BridgeError(
                    f"{given} is {kind}; give the name of a regular file, or - for standard output"
                )
        if database is not None:
            _not_the_database(given, target, database)
        parent = target.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise BridgeError(f"cannot write to {parent}: not a writable directory")
        return cls(target, str(given))

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """A binary file to write the export to; committed (renamed, or flushed) only when the
        block ends without an exception: otherwise nothing of it stays."""
        if self.target is None:
            out = sys.stdout.buffer
            yield out
            out.flush()
            return
        target = self.target
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o640)
            if ABORT:  # a SIGTERM whose SystemExit was swallowed where it landed
                raise SystemExit(ABORT[0])
            os.replace(tmp, target)
        except BaseException:  # KeyboardInterrupt and SystemExit (SIGTERM) included
            tmp.unlink(missing_ok=True)
            raise

    def size(self) -> int | None:
        """Bytes written (None for standard output)."""
        return self.target.stat().st_size if self.target is not None else None


#: Exit statuses of terminations asked for while an export runs (bridge.cli.export's SIGTERM
#: handler): the SystemExit it raises can land where Python ignores exceptions (a weakref
#: callback, a __del__), and the export must not then be committed anyway.
ABORT: list[int] = []


def _not_the_database(given: Path, target: Path, database: str) -> None:
    base = os.path.realpath(database)
    for suffix in _COMPANIONS:
        companion = base + suffix
        same = str(target) == companion
        if not same and target.exists() and os.path.exists(companion):
            same = os.path.samefile(target, companion)
        if same:
            what = "the database" if not suffix else f"the database's {suffix[1:]} file"
            raise BridgeError(f"{given} is {what} ({companion}); give another file")
