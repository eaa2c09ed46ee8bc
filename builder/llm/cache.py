"""A content-addressed store of completions: SQLite in WAL mode, one row per completion, written as
each one arrives. A stage killed at any moment loses at most the requests it had in flight; a rerun
finds every completed prompt here and sends nothing for it.

The key is ``base.cache_key`` (sha256 of backend kind, model, adapter, prompt or messages, params).
The cache holds what the model returned, before any parsing, so a parse rule can change without
paying again. It lives outside DVC outs (``$BUILDER_CACHE`` or the user's cache folder) because DVC
deletes a stage's outs before rerunning it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from builder.llm.base import Completion
from builder.llm.models import cache_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    choice_logprobs TEXT,
    created_at TEXT NOT NULL,
    stored REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS completions_stored ON completions(stored);
CREATE TABLE IF NOT EXISTS batches (
    input_hash TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    base_url TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL
);
"""


class CacheWriteFailed(Exception):
    """A completion could not be stored (disk full, read-only, ...): nothing more may be sent, since
    every further answer would be paid for and then forgotten."""


def default_path() -> Path:
    return cache_dir() / "completions.sqlite"


class Cache:
    """Thread-safe (one connection, a lock); safe across processes (WAL, busy timeout)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._writer = None
        self._error = None
        self.db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process (not a power cut)
        self.db.execute("PRAGMA busy_timeout=60000")
        self.db.executescript(_SCHEMA)

    # ------------------------------------------------------------------------------ completions

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, Completion] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for row in self.db.execute(
                        "SELECT key, model, text, finish_reason, prompt_tokens, completion_tokens, cost_usd, "
                        f"choice_logprobs, created_at FROM completions WHERE key IN ({marks})", chunk):
                    key, model, text, finish, pt, ct, cost, lp, created = row
                    found[key] = Completion("", text, finish, pt, ct, cost, model, True,
                                            json.loads(lp) if lp else None, created)
        return found

    @staticmethod
    def _row(key: str, backend: str, completion: Completion) -> tuple:
        lp = json.dumps(completion.choice_logprobs) if completion.choice_logprobs is not None else None
        return (key, backend, completion.model, completion.text, completion.finish_reason, completion.prompt_tokens,
                completion.completion_tokens, completion.cost_usd, lp, completion.created_at, time.time())

    def put(self, key: str, backend: str, completion: Completion, replace_old: bool = False) -> None:
        """Write one completion now (committed when this returns)."""
        self._write([self._row(key, backend, completion)], replace_old)

    def _write(self, rows: list[tuple], replace_old: bool) -> None:
        if self._error is not None:  # after a failed write nothing is trusted to land: fail every later one too
            raise sqlite3.OperationalError(str(self._error))
        with self._lock:
            self.db.executemany(
                f"INSERT OR {'REPLACE' if replace_old else 'IGNORE'} INTO completions VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)

    # A writer thread keeps SQLite commits off an event loop that has requests to send: each completion
    # is still committed as it arrives (a few hundred microseconds later; several at once under load).

    def put_soon(self, key: str, backend: str, completion: Completion, replace_old: bool = False):
        """Queue a write; returns a Future resolved once it is committed (callers that must bound what a
        kill can lose wait for it before sending their next request)."""
        from concurrent.futures import Future

        if self._writer is None:
            import queue

            self._queue = queue.SimpleQueue()
            self._writer = threading.Thread(target=self._drain, name="builder-cache-writer", daemon=True)
            self._writer.start()
        committed: Future = Future()
        self._queue.put((self._row(key, backend, completion), replace_old, committed))
        return committed

    def _drain(self) -> None:
        import queue

        while True:
            item = self._queue.get()
            batch = [item]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(x is None for x in batch)
            rows = [x for x in batch if x is not None]
            for replace_old in (False, True):
                chosen = [(row, committed) for row, rep, committed in rows if rep is replace_old]
                if not chosen:
                    continue
                try:
                    self._write([row for row, _ in chosen], replace_old)
                except sqlite3.Error as e:  # the caller stops sending; the completions stay in its memory
                    self._error = self._error or CacheWriteFailed(self._describe(e))
                for _, committed in chosen:
                    if self._error is None:
                        committed.set_result(None)
                    else:
                        committed.set_exception(self._error)
            if stop:
                return

    @property
    def failed(self) -> CacheWriteFailed | None:
        """The first failed write of this connection, if any (then stop sending)."""
        return self._error

    def _describe(self, error: sqlite3.Error) -> str:
        import shutil

        try:
            free = f"{shutil.disk_usage(self.path.parent).free / 1e6:.1f} MB free"
        except OSError:
            free = "free space unknown"
        return (f"cannot store completions in {self.path} ({error}; {free} on that disk): stopped sending so "
                "nothing is paid for twice; free space (or set BUILDER_CACHE elsewhere) and rerun: only "
                "what was never stored is sent again")

    def flush(self) -> None:
        """Wait until every put_soon() is committed; raises CacheWriteFailed if any write failed."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        if self._error is not None:
            raise self._error

    # ------------------------------------------------------------------------------ batches

    def batch_for(self, input_hash: str) -> tuple[str, str, str] | None:
        with self._lock:
            row = self.db.execute("SELECT batch_id, base_url, status FROM batches WHERE input_hash=?",
                                  (input_hash,)).fetchone()
        return tuple(row) if row else None

    def remember_batch(self, input_hash: str, batch_id: str, base_url: str, status: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?)",
                            (input_hash, batch_id, base_url, time.time(), status))

    def batches(self) -> list[tuple]:
        with self._lock:
            return self.db.execute("SELECT batch_id, base_url, status, created FROM batches ORDER BY created").fetchall()

    # ------------------------------------------------------------------------------ operator

    def stats(self) -> dict:
        with self._lock:
            total = self.db.execute("SELECT COUNT(*), COALESCE(SUM(cost_usd),0), COALESCE(SUM(prompt_tokens),0), "
                                    "COALESCE(SUM(completion_tokens),0), MIN(stored), MAX(stored) FROM completions").fetchone()
            by_model = self.db.execute("SELECT backend, model, COUNT(*), COALESCE(SUM(cost_usd),0) FROM completions "
                                       "GROUP BY backend, model ORDER BY COUNT(*) DESC").fetchall()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {
            "path": str(self.path),
            "completions": total[0],
            "cost_usd": round(total[1], 6),
            "prompt_tokens": total[2],
            "completion_tokens": total[3],
            "oldest": _iso(total[4]),
            "newest": _iso(total[5]),
            "bytes": size,
            "by_model": [{"backend": b, "model": m, "completions": n, "cost_usd": round(c, 6)} for b, m, n, c in by_model],
        }

    def prunable(self, *, older_than_days: float | None = None, model: str | None = None,
                 everything: bool = False) -> list[tuple[str, str, int]]:
        """What prune with these arguments would remove: (backend, model, completions), largest first."""
        where, args = self._prune_where(older_than_days, model, everything)
        with self._lock:
            return self.db.execute(f"SELECT backend, model, COUNT(*) FROM completions WHERE {where} "
                                   "GROUP BY backend, model ORDER BY COUNT(*) DESC", args).fetchall()

    def prune(self, *, older_than_days: float | None = None, model: str | None = None, everything: bool = False) -> int:
        where, args = self._prune_where(older_than_days, model, everything)
        with self._lock:
            n = self.db.execute(f"DELETE FROM completions WHERE {where}", args).rowcount
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.execute("VACUUM")
        return n

    @staticmethod
    def _prune_where(older_than_days: float | None, model: str | None, everything: bool) -> tuple[str, list]:
        clauses, args = [], []
        if older_than_days is not None:
            clauses.append("stored < ?")
            args.append(time.time() - older_than_days * 86400)
        if model is not None:
            clauses.append("model = ?")
            args.append(model)
        if not clauses and not everything:
            raise ValueError("prune needs --older-than, --model or --all")
        return " AND ".join(clauses) if clauses else "1=1", args

    def close(self) -> None:
        """Flush and close. A failed write is raised by flush() (the runner calls it and reports it)."""
        try:
            self.flush()
        except CacheWriteFailed:
            pass
        finally:
            with self._lock:
                self.db.close()


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None
