"""run_requests: cache first, backend for the rest, every request ends in exactly one result."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from builder import console
from builder.errors import DryRun, RunFailed
from builder.llm.base import Completion, Failure, Request, RunStats, cache_key
from builder.llm.outcome import Outcome, Summary


def make_backend(spec):
    if spec.backend == "hf":
        from builder.llm.hf import HFBackend

        return HFBackend(spec)
    from builder.llm.openai import OpenAIBackend

    return OpenAIBackend(spec)


UNPARSEABLE = "unparseable structured output"  # the model answered, but not with JSON matching the schema


def _postprocess(request: Request, completion: Completion) -> Completion | Failure:
    """Deterministic checks on what the model returned (the cache keeps the raw answer)."""
    completion = replace(completion, key=request.key)
    if request.json_schema is not None:
        from builder.llm.parse import parse_with_schema

        value, reason = parse_with_schema(completion.text, request.json_schema)
        if reason:
            return Failure(request.key, f"{UNPARSEABLE}: {reason}", raw=completion.text)
        completion.text = json.dumps(value, ensure_ascii=False)
    return completion


def _estimate(spec, identity: dict, todo, total: int, cached: int, desc: str) -> str:
    """What a run would send: requests not in the cache, tokens (prompt ~ 4 characters per token;
    completion at most max_new_tokens) and, with a price table, the most it could cost."""
    from builder.llm.pricing import cost_of

    prompt_chars = sum(len(r.prompt or "") + sum(len(c) for _, c in (r.messages or ())) for _, r in todo)
    prompt_tokens = prompt_chars // 4
    completion_tokens = sum(1 if r.choices else r.params.max_new_tokens for _, r in todo)
    if identity.get("endpoint") == "moderations":  # a classifier: it generates nothing
        completion_tokens = 0
    line = (f"dry run ({desc}): {len(todo)} distinct requests would be sent for {total - cached} records "
            f"({cached} of {total} answered from the cache) "
            f"to {spec.model} via {identity['backend']}; about {prompt_tokens:,} prompt tokens and at most "
            f"{completion_tokens:,} completion tokens")
    if identity.get("endpoint") == "moderations":
        line += "; the moderation endpoint is free"
    elif identity["backend"] == "openai":
        cost = cost_of(spec.prices or {}, spec.model, prompt_tokens, completion_tokens)
        line += (f"; at most ${cost:,.2f}" if cost else
                 f"; no price for {spec.model} in llm.prices, so no cost estimate")
    return line + ". Nothing was sent."


def run(spec, requests: list[Request], *, use_cache=True, desc="llm", rejects_path=None, cache=None, backend=None):
    from builder.llm.cache import Cache, CacheWriteFailed

    started = time.monotonic()
    seen = set()
    for r in requests:
        if r.key in seen:
            raise ValueError(f"duplicate request key {r.key!r}: every request needs its own key")
        seen.add(r.key)
    backend = backend or make_backend(spec)
    identity = backend.identity()
    by_ck: dict[str, list[Request]] = {}
    for r in requests:
        by_ck.setdefault(cache_key(identity, r), []).append(r)

    own_cache = cache is None or isinstance(cache, (str, Path))
    store = Cache(cache) if own_cache else cache
    completions: dict[str, Completion] = {}
    failures: dict[str, Failure] = {}
    summary = Summary(total=len(requests))
    stats = RunStats()
    try:
        dry_run = getattr(spec, "dry_run", False)
        lease_s = float(getattr(spec, "lease_s", 30.0))
        stopped = None  # why the run stopped early (a fatal backend error, the cache cannot be written)
        if use_cache and not dry_run:  # one transaction: what is stored, and a lease on what this process will send
            try:
                hits, leased = store.claim(by_ck, lease_s)
            except CacheWriteFailed as e:  # nothing sent yet: every request fails with the disk's message
                hits, leased, stopped = store.get_many(by_ck), [], str(e)
        else:  # use_cache=False asks afresh whatever another process has in flight: no leases
            hits = store.get_many(by_ck) if use_cache else {}
            leased = [ck for ck in by_ck if ck not in hits]
        for ck, completion in hits.items():
            for r in by_ck[ck]:
                _settle(r, _postprocess(r, completion), completions, failures)
        summary.cached = sum(len(by_ck[ck]) for ck in hits)
        todo = [(ck, by_ck[ck][0]) for ck in leased]
        if dry_run:
            raise DryRun(_estimate(spec, identity, todo, len(requests), summary.cached, desc))
        leased_set = set(leased)
        elsewhere = [] if stopped else [ck for ck in by_ck if ck not in hits and ck not in leased_set]  # in flight elsewhere
        if elsewhere:
            console.info(f"{desc}: {len(elsewhere)} requests are in flight in another process sharing {store.path}: "
                         "waiting for their answers instead of paying again")

        # rate, ETA and (in the postfix) the cost so far
        bar = console.progress_bar(desc, len(requests), initial=summary.cached, unit="req", smoothing=0.05)

        def emit(ck: str, result: Completion | Failure):
            """Settle a result; returns the cache write's Future (None when nothing is written)."""
            if ck not in by_ck or ck in pending_done:
                return None
            pending_done.add(ck)
            committed = None
            if isinstance(result, Completion):
                committed = store.put_soon(ck, identity["backend"], result, replace_old=not use_cache)
                for r in by_ck[ck]:
                    _settle(r, _postprocess(r, result), completions, failures)
            else:
                store.release([ck])  # another process sharing the cache may try it now
                for r in by_ck[ck]:
                    _settle(r, replace(result, key=r.key), completions, failures)
            bar.update(len(by_ck[ck]))
            if identity["backend"] == "openai" or stats.retries or failures:
                bar.set_postfix_str(f"${stats.cost_usd:.4f} retries={stats.retries} failed={len(failures)}", refresh=False)
            if store.failed is not None:  # this result is settled in memory; stop paying for more
                raise store.failed
            return committed

        pending_done: set[str] = set()
        try:
            while True:
                if todo:
                    backend.run(todo, emit, stats, store)
                if not elsewhere or stopped or stats.stopped:
                    break
                # Another process has these in flight: read what it stored; take over what it gave up
                # (its request failed) or left behind (killed: the lease expired).
                time.sleep(min(0.5, lease_s / 4))
                landed, leased = store.claim(elsewhere, lease_s)
                for ck, completion in landed.items():
                    pending_done.add(ck)
                    for r in by_ck[ck]:
                        _settle(r, _postprocess(r, completion), completions, failures)
                    bar.update(len(by_ck[ck]))
                summary.waited += sum(len(by_ck[ck]) for ck in landed)
                leased_set = set(leased)
                todo = [(ck, by_ck[ck][0]) for ck in leased]
                elsewhere = [ck for ck in elsewhere if ck not in landed and ck not in leased_set]
        except (RunFailed, CacheWriteFailed) as e:  # what arrived before the stop is settled: keep it
            stopped = str(e)
        finally:
            bar.close()
            backend.close()
            try:
                store.flush()
            except CacheWriteFailed as e:  # never masks an exception already on its way (Ctrl-C, SIGTERM)
                stopped = stopped or str(e)
            store.release()  # what this process did not finish, another may take at once
        unsent = stopped or stats.stopped or "no result from the backend (interrupted?)"
        for ck in by_ck:
            if ck not in hits and ck not in pending_done:  # never leave a record unaccounted for
                for rr in by_ck[ck]:
                    _settle(rr, Failure(rr.key, unsent), completions, failures)
    finally:
        if own_cache:
            store.close()

    summary.done = len(completions)
    summary.failed = len(failures)
    summary.retried = stats.retried
    summary.prompt_tokens = stats.prompt_tokens
    summary.completion_tokens = stats.completion_tokens
    summary.cost_usd = stats.cost_usd
    summary.notes = stats.notes
    summary.seconds = time.monotonic() - started
    if rejects_path is not None:
        write_rejects(rejects_path, [r for r in requests if r.key in failures], failures)
    assert len(completions) + len(failures) == len(requests)
    outcome = Outcome(completions, failures, summary)
    if stopped:
        raise RunStopped(stopped, outcome)
    return outcome


class RunStopped(RunFailed):
    """The run stopped early (exit 1), but every request is settled: ``outcome`` holds the completions
    that arrived (write them out) and the rest as failures whose reason is why the run stopped."""

    def __init__(self, message: str, outcome):
        super().__init__(message)
        self.outcome = outcome


def _settle(r: Request, result, completions: dict, failures: dict) -> None:
    if isinstance(result, Completion):
        failures.pop(r.key, None)
        completions[r.key] = result
    else:
        failures[r.key] = result


def write_rejects(path, requests: list[Request], failures: dict[str, Failure]) -> None:
    from builder.records import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in requests:
            fail = failures[r.key]
            row = {"key": r.key, "reason": fail.reason, "raw": fail.raw}
            if r.prompt is not None:
                row["prompt"] = r.prompt
            else:
                row["messages"] = [{"role": a, "content": b} for a, b in r.messages]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    console.info(f"{len(requests)} failed requests written to {path} with their reasons")
