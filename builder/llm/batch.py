"""The Batch API for large paid runs (half price, results within 24 h): write the request JSONL,
upload it, create the batch, poll, download, merge into the cache.

Resumable by batch id: the id is stored in the cache database under the hash of the request file, so
a rerun of the same stage (after a crash, a closed laptop or Ctrl-C while polling) finds the batch
it already paid for and polls it again instead of creating a new one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence

from builder import console
from builder.errors import RunFailed
from builder.llm.base import Emit, Failure, Request, Retryable, RunStats
from builder.llm.pricing import BATCH_DISCOUNT

BATCH_LIMIT = 50_000  # requests per batch file (OpenAI's limit)

FINAL = {"completed", "failed", "expired", "cancelled"}


def run_batch(backend, items: Sequence[tuple[str, Request]], emit: Emit, stats: RunStats, store=None) -> None:
    from builder.llm.cache import Cache
    from builder.llm.models import cache_dir

    own_store = store is None
    store = store or Cache()  # batch ids are kept beside the completions
    url = backend.base_urls[0]
    client = backend.sync_client(url, max_retries=5)
    try:
        by_path: dict[str, list] = {}  # one batch file serves one endpoint
        for ck, r in items:
            body = backend.body(r)
            path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
            by_path.setdefault(path, []).append((ck, r, body))
        chunks = [group[i:i + BATCH_LIMIT] for group in by_path.values() for i in range(0, len(group), BATCH_LIMIT)]
        for rows in chunks:
            chunk = [(ck, r) for ck, r, _ in rows]
            requests = dict(chunk)
            lines = [json.dumps({"custom_id": ck, "method": "POST",
                                 "url": "/v1/chat/completions" if "messages" in body else "/v1/completions",
                                 "body": body}, ensure_ascii=False) + "\n" for ck, _, body in rows]
            digest = input_hash(lines)
            known = store.batch_for(digest)
            if known and known[2] not in ("failed", "expired", "cancelled"):
                batch_id = known[0]
                console.info(f"batch: resuming {batch_id} ({len(chunk)} requests)")
            else:
                folder = cache_dir() / "batches"
                folder.mkdir(parents=True, exist_ok=True)
                file = folder / f"{digest[:16]}.jsonl"
                file.write_text("".join(lines), encoding="utf-8")
                with open(file, "rb") as f:
                    uploaded = client.files.create(file=f, purpose="batch")
                endpoint = json.loads(lines[0])["url"]
                batch = client.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h")
                batch_id = batch.id
                store.remember_batch(digest, batch_id, url, batch.status)
                stats.sent += 1
                console.info(f"batch: created {batch_id} with {len(chunk)} requests (input {file}); "
                     "rerun the same command to resume polling it if this process stops")
            batch = _poll(client, batch_id, backend.spec.batch_poll_s)
            store.remember_batch(digest, batch_id, url, batch.status)
            done: set[str] = set()
            for file_id in (batch.output_file_id, batch.error_file_id):
                if not file_id:
                    continue
                content = client.files.content(file_id)
                text = content.text if hasattr(content, "text") else content.read().decode("utf-8")
                for line in text.splitlines():
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    ck = row.get("custom_id")
                    if ck not in requests or ck in done:
                        continue
                    done.add(ck)
                    emit(ck, _result(backend, requests[ck], row, stats))
            for ck, r in chunk:
                if ck not in done:
                    emit(ck, Failure(r.key, f"batch {batch_id} ended {batch.status} without a result for this request"))
    finally:
        client.close()
        if own_store:
            store.close()


def _poll(client, batch_id: str, every: float):
    last = None
    while True:
        try:
            batch = client.batches.retrieve(batch_id)
        except Exception as e:  # the client already retried transient errors
            raise RunFailed(f"batch {batch_id}: cannot poll it ({type(e).__name__}: {e}); rerun to resume") from None
        counts = getattr(batch, "request_counts", None)
        status = f"{batch.status}" + (f" {counts.completed}/{counts.total} done, {counts.failed} failed" if counts else "")
        if status != last:
            console.info(f"batch {batch_id}: {status}")
            last = status
        if batch.status in FINAL:
            return batch
        time.sleep(every)


def _result(backend, r: Request, row: dict, stats: RunStats):
    response = row.get("response") or {}
    error = row.get("error")
    if error or response.get("status_code", 200) != 200:
        reason = (error or {}).get("message") if isinstance(error, dict) else None
        body = response.get("body")
        return Failure(r.key, f"batch request failed: HTTP {response.get('status_code')}: {reason or json.dumps(body)[:300]}",
                       raw=json.dumps(row, ensure_ascii=False))
    try:
        result = backend.parse(r, response.get("body"), factor=BATCH_DISCOUNT)
    except Retryable as e:
        return Failure(r.key, f"batch result unreadable: {e.reason}", raw=json.dumps(row, ensure_ascii=False))
    if hasattr(result, "cost_usd"):
        stats.prompt_tokens += result.prompt_tokens
        stats.completion_tokens += result.completion_tokens
        stats.cost_usd += result.cost_usd
    return result


def input_hash(lines: list[str]) -> str:
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
