"""The works of a metadata read, in a SQLite table (standard library) rather than in memory.

A million works would take about half a gigabyte as Python objects; the table keeps them on disk
(or in a compact in-memory database for small reads), finds duplicate keys through its primary
key, and hands back each split in the shard plan's order: a seeded hash of the work's key, which
shuffles museums and centuries across shards the same way on every run and machine.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from typing import Iterator

from artdate.core.works import Work, derive_seed

WORK_FIELDS = (
    "museum",
    "id",
    "year",
    "year_start",
    "year_end",
    "split",
    "file",
    "url",
    "title",
    "artist",
    "csv_dir",
    "source",
    "line",
    "date_text",
)
COLUMNS = ("key", *WORK_FIELDS, "in_window", "rank")


def plan_rank(seed: int, split: str, key: str) -> int:
    """A work's place in its split's shard plan: a seeded 63-bit hash, a shuffle that needs no memory."""
    return derive_seed(seed, split, key)


class Catalog:
    """Works by key; `path` is a file (large reads) or ":memory:"."""

    def __init__(self, path: str = ":memory:"):
        self.path = path
        with self._writing():
            self.db = sqlite3.connect(path)
            self.db.execute("PRAGMA journal_mode=OFF")  # a scratch table: nothing to recover after a crash
            self.db.execute("PRAGMA synchronous=OFF")
            self.db.execute(f"CREATE TABLE works ({', '.join(COLUMNS)}, UNIQUE (key))")
            # works an export's type left out before any request: a whole export's photographs
            # would otherwise be a list in memory
            self.db.execute("CREATE TABLE excluded (museum, id, reason, place)")

    @contextlib.contextmanager
    def _writing(self):
        """SQLite reports a full disk as 'disk I/O error' with no file name: say which file, as an
        OSError, so the command ends with one line like any other full disk."""
        try:
            yield
        except sqlite3.OperationalError as problem:
            name = getattr(problem, "sqlite_errorname", "")
            if not name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN")):
                raise
            code = errno.ENOSPC if name == "SQLITE_FULL" else errno.EIO
            raise OSError(
                code,
                f"{problem} ({name}) writing the scratch list of works; is its disk full? (it goes to TMPDIR)",
                self.path,
            ) from None

    def _works(self, condition: str, arguments: tuple = ()) -> Iterator[Work]:
        for row in self.db.execute(f"SELECT {', '.join(WORK_FIELDS)} FROM works WHERE {condition}", arguments):
            yield Work(*row)

    def get(self, key: str) -> Work | None:
        return next(self._works("key = ?", (key,)), None)

    def add(self, work: Work, in_window: bool, seed: int) -> None:
        values = (
            work.key,
            *(getattr(work, name) for name in WORK_FIELDS),
            in_window,
            plan_rank(seed, work.split, work.key),
        )
        with self._writing():
            self.db.execute(f"INSERT INTO works VALUES ({', '.join('?' * len(COLUMNS))})", values)

    def exclude(self, museum: str, work_id: str, reason: str, where: str) -> None:
        with self._writing():
            self.db.execute("INSERT INTO excluded VALUES (?, ?, ?, ?)", (museum, work_id, reason, where))

    def excluded(self) -> Iterator[tuple[str, str, str, str]]:
        """(museum, id, reason, file:line) of each excluded work, in the order they were read."""
        return self.db.execute("SELECT museum, id, reason, place FROM excluded ORDER BY rowid")

    def excluded_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM excluded").fetchone()[0]

    def finish(self) -> None:
        """After the last add: index the plan order."""
        with self._writing():
            self.db.execute("CREATE INDEX plan ON works (split, rank) WHERE in_window")
            self.db.commit()

    def count(self, split: str | None = None) -> int:
        where, args = ("AND split = ?", (split,)) if split else ("", ())
        return self.db.execute(f"SELECT count(*) FROM works WHERE in_window {where}", args).fetchone()[0]

    def in_plan_order(self, split: str) -> Iterator[Work]:
        """The split's works inside the year window, streamed in the shard plan's order."""
        return self._works("in_window AND split = ? ORDER BY rank", (split,))

    def in_file_order(self) -> Iterator[Work]:
        """The works inside the year window, in the order they were read."""
        return self._works("in_window ORDER BY rowid")

    def any_url_without_file(self) -> bool:
        return (
            self.db.execute("SELECT 1 FROM works WHERE in_window AND url != '' AND file = '' LIMIT 1").fetchone()
            is not None
        )

    def close(self) -> None:
        self.db.close()
