"""Where the control plane keeps its desired state: a small document store.

Documents are JSON objects filed by kind (`nodes`, `deployments`, `artifacts`,
`assignments`, `rollouts`) and key. `apply` writes several documents in one transaction,
so a change is all there or not at all. The embedded store is SQLite (one file, one
process); an etcd store implements the same interface for several control-plane replicas.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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


class SqliteStore:
    """Documents in one SQLite table, written in WAL mode. Every statement runs on one
    worker thread of its own: a reconciliation pass writing a thousand assignments does
    not hold the event loop (the heartbeats) while SQLite commits."""

    def __init__(self, path: Path | str) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-sqlite")
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS documents ("
            " kind TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL,"
            " PRIMARY KEY (kind, key))"
        )

    async def _run(self, work: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, work)

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return await self._run(lambda: self._get(kind, key))  # type: ignore[no-any-return]

    def _get(self, kind: str, key: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT body FROM documents WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    async def list(self, kind: str) -> dict[str, dict[str, Any]]:
        return await self._run(lambda: self._list(kind))  # type: ignore[no-any-return]

    def _list(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = self._db.execute(
            "SELECT key, body FROM documents WHERE kind = ? ORDER BY key", (kind,)
        ).fetchall()
        return {key: dict(orjson.loads(body)) for key, body in rows}

    async def apply(self, changes: Sequence[Change]) -> None:
        if changes:
            await self._run(lambda: self._apply(tuple(changes)))

    def _apply(self, changes: Sequence[Change]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for kind, key, body in changes:
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
        await self._run(self._db.close)
        self._worker.shutdown(wait=False)


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
