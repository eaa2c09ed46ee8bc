"""A content-addressed store of completions: SQLite in WAL mode, one row per completion, written as
each one arrives. A stage killed at any moment loses at most the requests it had in flight; a rerun
finds every completed prompt here and sends nothing for it.

The key is ``base.cache_key`` (sha256 of backend kind, model, adapter, prompt or messages, params).
The cache holds what the model returned, before any parsing, so a parse rule can change without
paying again. It lives outside DVC outs (``$BUILDER_CACHE`` or the user's cache folder) because DVC
deletes a stage's outs before rerunning it.

Several processes may share one cache and stay exactly-once: before sending, a process takes a
*lease* on each key it is about to ask for (``claim``, one transaction with the check for stored
completions, so exactly one process wins a key). Storing the completion releases the lease; a process
that finds a key leased by another waits and reads the completion when it lands. A lease is live while
its owner's expiry (one ``lease_owners`` row per process, ``llm.lease_s`` ahead) is in the future; a
thread renews it every lease_s / 3 (one UPDATE however many keys are leased), so a process killed with
kill -9 leaves leases that expire within ``lease_s``, and another process then takes them over. On the
same machine a dead owner is known at once (its pid is gone), so a rerun after kill -9 does not wait.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
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
CREATE TABLE IF NOT EXISTS lease_owners (
    owner TEXT PRIMARY KEY,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL
) WITHOUT ROWID;
"""
_OPEN_OWNERS: set[str] = set()  # the owners of this process's open caches (its other leases are dead)


def _this_machine() -> str:
    """Host name and pid namespace: where a pid names the same process (containers may share a host name)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def _gone(owner: str) -> bool:
    """The owner process is known to be dead: on this machine and its pid no longer exists (or, in this
    process, its cache was closed). Elsewhere only the expiry tells; a reused pid only makes us wait."""
    machine, pid, _ = owner.rsplit(":", 2)
    if machine != _this_machine():
        return False
    if int(pid) == os.getpid():
        return owner not in _OPEN_OWNERS
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        return False
    return False

CHUNK = 500  # keys per IN (...) query: far below SQLite's limit on bound variables


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
        # Who holds a lease: machine and pid say which process (and let a dead one be recognised), the
        # random token keeps two Cache objects of one process apart.
        self.owner = f"{_this_machine()}:{os.getpid()}:{secrets.token_hex(4)}"
        _OPEN_OWNERS.add(self.owner)
        self._renewer: threading.Thread | None = None
        self._renewing = threading.Event()  # set while this process holds leases
        self._closing = threading.Event()

    @contextmanager
    def _transaction(self):
        """One write transaction. IMMEDIATE takes SQLite's write lock at BEGIN (waiting up to the busy
        timeout), so what it reads cannot change before it writes, whatever other processes do."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # SQLite already rolled back after some errors (disk full)
                    self.db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------------------ completions

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        with self._lock:
            return self._select(list(dict.fromkeys(keys)))

    def _select(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        for chunk in _chunks(keys):
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
        with self._transaction() as db:  # the completions and the release of their leases land together
            db.executemany(
                f"INSERT OR {'REPLACE' if replace_old else 'IGNORE'} INTO completions VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            db.executemany("DELETE FROM leases WHERE key=? AND owner=?", [(row[0], self.owner) for row in rows])

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

    # ------------------------------------------------------------------------------ leases

    def claim(self, keys: Iterable[str], lease_s: float) -> tuple[dict[str, Completion], list[str]]:
        """For each key: its stored completion, or a lease for this process when no other process holds
        a live one. Returns (stored completions, leased keys); the keys in neither are in flight in
        another process (ask again later: their completion lands, or their lease expires or is released).
        One write transaction for all the keys: the check and the take cannot interleave with another
        process's, and a single-process run pays one commit, not one per key. Raises CacheWriteFailed
        when the leases cannot be written (nothing has been sent then)."""
        keys = list(dict.fromkeys(keys))
        found = self.get_many(keys)
        if not self._free([k for k in keys if k not in found]):
            return found, []  # everything is stored or in flight elsewhere: no need for the write lock
        try:
            with self._transaction() as db:
                found.update(self._select([k for k in keys if k not in found]))
                wanted = [k for k in keys if k not in found]
                live = self._live_owners()
                db.executemany("DELETE FROM lease_owners WHERE owner=?", [(o,) for o in self._owners() if o not in live])
                db.execute("INSERT OR REPLACE INTO lease_owners VALUES (?,?)", (self.owner, time.time() + lease_s))
                # Exactly one process wins a key: a lease is inserted, or taken over only from a dead owner.
                db.executemany("INSERT INTO leases VALUES (?,?) ON CONFLICT(key) DO UPDATE SET owner=excluded.owner "
                               "WHERE leases.owner NOT IN (SELECT owner FROM lease_owners)",
                               [(k, self.owner) for k in wanted])
                leased = set()
                for chunk in _chunks(wanted):
                    leased.update(k for (k,) in db.execute(
                        f"SELECT key FROM leases WHERE owner=? AND key IN ({','.join('?' * len(chunk))})",
                        [self.owner, *chunk]))
        except sqlite3.Error as e:
            raise CacheWriteFailed(self._describe(e)) from None
        if leased:
            self._keep_renewing(lease_s)
        return found, [k for k in wanted if k in leased]

    def _free(self, keys: list[str]) -> list[str]:
        """The keys no other process holds a live lease on (a read: no write lock)."""
        held = set()
        with self._lock:
            live = self._live_owners() - {self.owner}
            for chunk in _chunks(keys if live else []):
                held.update(k for k, owner in self.db.execute(
                    f"SELECT key, owner FROM leases WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                    if owner in live)
        return [k for k in keys if k not in held]

    def _owners(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT owner, expires FROM lease_owners"))

    def _live_owners(self) -> set[str]:
        """Owners whose leases hold: not expired, and not known to be dead (one row per running process)."""
        now = time.time()
        return {o for o, expires in self._owners().items() if expires > now and not _gone(o)}

    def renew(self, lease_s: float) -> None:
        """Push back the expiry of every lease this process holds (one row, however many leases)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO lease_owners VALUES (?,?)", (self.owner, time.time() + lease_s))

    def release(self, keys: Iterable[str] | None = None) -> None:
        """Give up these leases (all of this process's when keys is None, with what dead owners left
        behind): another process may take them at once. Never raises: a lease that cannot be deleted
        (disk full) still expires."""
        try:
            with self._transaction() as db:
                if keys is not None:
                    db.executemany("DELETE FROM leases WHERE key=? AND owner=?", [(k, self.owner) for k in keys])
                else:
                    live = self._live_owners() - {self.owner}
                    db.executemany("DELETE FROM lease_owners WHERE owner=?", [(o,) for o in self._owners() if o not in live])
                    db.execute("DELETE FROM leases WHERE owner NOT IN (SELECT owner FROM lease_owners)")
        except sqlite3.Error:
            pass
        if keys is None:
            self._renewing.clear()

    def _keep_renewing(self, lease_s: float) -> None:
        """A daemon thread renews this process's leases every lease_s / 3 while it holds any: a slow
        request never loses its lease, and a killed process's leases expire within lease_s."""
        self._lease_s = lease_s
        self._renewing.set()
        if self._renewer is not None:
            return

        def beat():
            while not self._closing.wait(self._lease_s / 3):
                if self._renewing.is_set():
                    try:
                        self.renew(self._lease_s)
                    except sqlite3.Error:  # a full disk: the leases may expire; the next write reports the disk
                        pass

        self._renewer = threading.Thread(target=beat, name="builder-cache-leases", daemon=True)
        self._renewer.start()

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
            self.release()
            _OPEN_OWNERS.discard(self.owner)
            self._closing.set()
            if self._renewer is not None:
                self._renewer.join()
            with self._lock:
                self.db.close()


def _chunks(keys: list[str]):
    for start in range(0, len(keys), CHUNK):
        yield keys[start:start + CHUNK]


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None
