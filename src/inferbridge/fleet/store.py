"""Where the control plane keeps its desired state: a small document store.

Documents are JSON objects filed by kind (`nodes`, `deployments`, `artifacts`,
`assignments`, `rollouts`) and key. `apply` writes several documents in one transaction,
so a change is all there or not at all. The embedded store is SQLite (one file, one
process); an etcd store implements the same interface for several control-plane replicas.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from inferbridge.fleet.errors import InvalidSpec

__all__ = ["Change", "SqliteStore", "Store", "open_store"]

#: (kind, key, document) — a document of None deletes the key.
Change = tuple[str, str, dict[str, Any] | None]


class Store(Protocol):
    """The control plane's persistence. Every method is a coroutine so that networked
    stores fit; the SQLite one answers at once."""

    async def get(self, kind: str, key: str) -> dict[str, Any] | None: ...

    async def list(self, kind: str) -> dict[str, dict[str, Any]]: ...

    async def apply(self, changes: Sequence[Change]) -> None: ...

    async def close(self) -> None: ...


#: Rows a SQLite transaction writes between two yields to the event loop.
_ROWS_PER_YIELD = 100


class SqliteStore:
    """Documents in one SQLite table, written in WAL mode, on the event loop's thread: a
    worker thread would hold the GIL whenever the OS preempts it (a loaded machine), and
    the loop would wait. A large transaction (a thousand assignments) yields to the loop
    every `_ROWS_PER_YIELD` rows instead; transactions wait for each other."""

    def __init__(self, path: Path | str) -> None:
        self._lock: asyncio.Lock | None = None  # made in the running loop
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS documents ("
            " kind TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL,"
            " PRIMARY KEY (kind, key))"
        )

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT body FROM documents WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    async def list(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = self._db.execute(
            "SELECT key, body FROM documents WHERE kind = ? ORDER BY key", (kind,)
        ).fetchall()
        return {key: dict(orjson.loads(body)) for key, body in rows}

    async def apply(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._apply(changes)

    async def _apply(self, changes: Sequence[Change]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for index, (kind, key, body) in enumerate(changes):
                if index and index % _ROWS_PER_YIELD == 0:
                    await asyncio.sleep(0)
                if body is None:
                    self._db.execute(
                        "DELETE FROM documents WHERE kind = ? AND key = ?", (kind, key)
                    )
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO documents (kind, key, body) VALUES (?, ?, ?)",
                        (kind, key, orjson.dumps(body)),
                    )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def close(self) -> None:
        self._db.close()


def open_store(url: str) -> Store:
    """`sqlite:PATH` (or `sqlite::memory:`) or `etcd:http://host:port[,...]`."""
    scheme, sep, rest = url.partition(":")
    if not sep or not rest:
        raise InvalidSpec(f"--store {url!r}: expected sqlite:PATH or etcd:URL,...")
    if scheme == "sqlite":
        return SqliteStore(rest)
    if scheme == "etcd":
        from inferbridge.fleet.etcd import EtcdStore, parse_endpoints

        return EtcdStore(parse_endpoints(rest))
    raise InvalidSpec(f"--store {url!r}: unknown store {scheme!r} (sqlite, etcd)")
