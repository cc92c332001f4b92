"""Where rollouts and their audit log live: one SQLite file in the server's state directory.

The current rollout of each model is one row (its whole state as JSON, rewritten at every
transition in one transaction together with the audit record that explains it), so a
server restarted mid-rollout reads back exactly the step and weights it had. The audit log
is append-only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AuditRecord", "RolloutStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    model TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    model TEXT NOT NULL,
    rollout TEXT NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_model ON audit (model, seq);
"""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: float
    model: str
    rollout: str
    event: str
    actor: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
            "model": self.model,
            "rollout": self.rollout,
            "event": self.event,
            "actor": self.actor,
            "detail": self.detail,
        }


class RolloutStore:
    """SQLite in WAL mode; every write is one short transaction. The file is created on the
    first write, so a server that never runs a rollout leaves nothing behind."""

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: in memory (tests of the layer above)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if self.path is not None and not create and not self.path.exists():
            return None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            str(self.path) if self.path is not None else ":memory:",
            check_same_thread=False,
            isolation_level=None,  # explicit BEGIN/COMMIT below
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        return db

    def load(self) -> list[dict[str, Any]]:
        """Every model's current rollout state."""
        with self._lock:
            db = self._connect(create=False)
            if db is None:
                return []
            rows = db.execute("SELECT state FROM rollouts ORDER BY model").fetchall()
        return [json.loads(row[0]) for row in rows]

    def save(
        self,
        state: dict[str, Any],
        event: str,
        actor: str,
        detail: dict[str, Any],
    ) -> AuditRecord:
        """Write a model's rollout state and the audit record of the transition, atomically."""
        return self._write(state["model"], state["id"], state, event, actor, detail)

    def record(
        self, model: str, rollout: str, event: str, actor: str, detail: dict[str, Any]
    ) -> AuditRecord:
        """An audit record with no change of state (an analysis, a refused action)."""
        return self._write(model, rollout, None, event, actor, detail)

    def remove(self, model: str, rollout: str, actor: str, detail: dict[str, Any]) -> None:
        """Forget a model's rollout (its audit log stays)."""
        with self._lock:
            db = self._connect(create=True)
            assert db is not None
            now = time.time()
            db.execute("BEGIN")
            try:
                db.execute("DELETE FROM rollouts WHERE model = ?", (model,))
                db.execute(
                    "INSERT INTO audit (at, model, rollout, event, actor, detail)"
                    " VALUES (?, ?, ?, 'cleared', ?, ?)",
                    (now, model, rollout, actor, json.dumps(detail)),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _write(
        self,
        model: str,
        rollout: str,
        state: dict[str, Any] | None,
        event: str,
        actor: str,
        detail: dict[str, Any],
    ) -> AuditRecord:
        with self._lock:
            db = self._connect(create=True)
            assert db is not None
            now = time.time()
            db.execute("BEGIN")
            try:
                if state is not None:
                    db.execute(
                        "INSERT INTO rollouts (model, id, state, updated) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT(model) DO UPDATE SET id = excluded.id,"
                        " state = excluded.state, updated = excluded.updated",
                        (model, rollout, json.dumps(state), now),
                    )
                cursor = db.execute(
                    "INSERT INTO audit (at, model, rollout, event, actor, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (now, model, rollout, event, actor, json.dumps(detail)),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            seq = cursor.lastrowid or 0
        return AuditRecord(seq, now, model, rollout, event, actor, detail)

    def audit(
        self, model: str | None = None, rollout: str | None = None, limit: int = 10_000
    ) -> Iterator[AuditRecord]:
        """The audit log, oldest first (of one model, or one rollout, or everything)."""
        with self._lock:
            db = self._connect(create=False)
            if db is None:
                return iter(())
            query = "SELECT seq, at, model, rollout, event, actor, detail FROM audit"
            clauses, arguments = [], []
            if model is not None:
                clauses.append("model = ?")
                arguments.append(model)
            if rollout is not None:
                clauses.append("rollout = ?")
                arguments.append(rollout)
            if clauses:
                query += " WHERE " + " AND ".join(clauses)
            query += " ORDER BY seq DESC LIMIT ?"
            rows = db.execute(query, (*arguments, limit)).fetchall()
        return (
            AuditRecord(seq, at, m, r, e, a, json.loads(d))
            for seq, at, m, r, e, a, d in reversed(rows)
        )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
