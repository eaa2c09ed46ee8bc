"""Shared LLM test fixtures: a real `transformers serve` of the packaged model, a loopback fault server,
and a session-wide BUILDER_CACHE (the packaged GGUF is converted once per test run).

The fault server is a small HTTP/1.1 server of our own (stdlib asyncio, run in a subprocess so it
never competes with the client for the GIL). It speaks enough of the OpenAI API for the real `openai`
client: /v1/chat/completions, /v1/completions, /v1/moderations, /v1/models, /v1/files and /v1/batches. It can add fixed
latency and inject faults (429 with Retry-After, 500, 503, dropped connections, non-JSON bodies,
hangs), and it counts what it receives (GET /_stats; configure with POST /_config).

    python -m tests.llm_fixtures --port 0     # prints "PORT <n>" when ready
"""

from __future__ import annotations

import argparse
import asyncio
import email.parser
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAULT_KINDS = ("429", "500", "503", "drop", "nonjson", "hang")


def reply_for(text: str) -> str:
    """The fault server's deterministic answer to a prompt (tests check outputs are not cross-wired)."""
    return "instruction " + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                         "sexual/minors", "violence", "violence/graphic")


def moderation_for(text: str, flag_word: str = "kill") -> dict:
    """The fault server's moderation result for a text, in the endpoint's real shape: category scores
    below 0.1 from the text's hash, and violence 0.97 (flagged) when the text holds ``flag_word``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    scores = {c: round(digest[i] / 2560, 6) for i, c in enumerate(MODERATION_CATEGORIES)}
    if flag_word and flag_word in text.lower():
        scores["violence"] = 0.97
    flags = {c: v >= 0.5 for c, v in scores.items()}
    return {"flagged": any(flags.values()), "categories": flags, "category_scores": scores,
            "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES}}


# ------------------------------------------------------------------------------------ the server


class _State:
    def __init__(self):
        self.config = {"latency_s": 0.0, "fault_rate": 0.0, "fault_kinds": list(FAULT_KINDS), "retry_after": "0.05",
                       "hang_s": 30.0, "always_500": "ALWAYS500", "always_400": "ALWAYS400", "seed": 1234,
                       "batch_polls": 1, "logprobs": False, "empty_for": "EMPTYOUT", "truncate_for": "TRUNCOUT",
                       "echo_for": "ECHOHEADERS", "flag_word": "kill", "script": []}
        self.reset()

    def reset(self):
        self.rng = random.Random(self.config["seed"])
        self.stats = {"received": 0, "api_received": 0, "ok": 0, "faults": {k: 0 for k in FAULT_KINDS},
                      "in_flight": 0, "max_in_flight": 0, "first_arrival": None, "last_done": None,
                      "by_prompt": {}, "ok_by_prompt": {}, "paths": {}, "batches_created": 0,
                      "files_uploaded": 0, "models": {}}
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}


STATE = _State()


def _prompt_text(body: dict) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content")) for m in body["messages"])
    if "input" in body:  # /v1/moderations: a string or a list of strings
        return "\n".join(map(str, body["input"])) if isinstance(body["input"], list) else str(body["input"])
    return str(body.get("prompt"))


def _moderation(body: dict) -> dict:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return {"id": "modr-" + hashlib.sha256(_prompt_text(body).encode()).hexdigest()[:12], "model": body.get("model"),
            "results": [moderation_for(str(text), STATE.config["flag_word"]) for text in inputs]}


def _completion(body: dict, chat: bool) -> dict:
    text = _prompt_text(body)
    answer = reply_for(text) + (f" v{body['seed']}" if body.get("seed") else "")  # sampled candidates differ by seed
    finish = "stop"
    if STATE.config["empty_for"] and STATE.config["empty_for"] in text:
        answer = ""  # a 200 with no text: stages must reject it with a reason, not crash
    elif STATE.config["truncate_for"] and STATE.config["truncate_for"] in text:
        finish = "length"  # cut off at max_tokens
    usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(answer.split()),
             "total_tokens": len(text.split()) + len(answer.split())}
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}
        if body.get("logprobs") and STATE.config["logprobs"]:
            top = [{"token": "Yes", "logprob": -0.2, "bytes": None}, {"token": "No", "logprob": -1.7, "bytes": None}]
            choice["logprobs"] = {"content": [{"token": "Yes", "logprob": -0.2, "bytes": None, "top_logprobs": top}]}
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
                "choices": [choice], "usage": usage}
    return {"id": "cmpl-1", "object": "text_completion", "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": 0, "text": answer, "finish_reason": finish, "logprobs": None}], "usage": usage}


def _response(status: int, body: bytes, content_type: str = "application/json", extra: dict | None = None) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
              503: "Service Unavailable"}.get(status, "Status")
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            "Connection: keep-alive"]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _json(status: int, obj, extra=None) -> bytes:
    return _response(status, json.dumps(obj).encode(), extra=extra)


async def _read_request(reader):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(int(headers.get("content-length", 0)))
    return method, path, headers, body


async def _handle_api(path: str, body: dict, headers: dict | None = None) -> tuple[str, bytes | None]:
    """('ok', response) or (fault kind, response or None for drop/hang)."""
    cfg, st = STATE.config, STATE.stats
    text = _prompt_text(body)
    if cfg["echo_for"] and cfg["echo_for"] in text:  # a careless proxy: echoes the request's headers in its error
        return "400", _json(400, {"error": {"message": f"bad request {path}", "headers": headers or {},
                                            "raw": "\r\n".join(f"{k}: {v}" for k, v in (headers or {}).items())}})
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    st["by_prompt"][digest] = st["by_prompt"].get(digest, 0) + 1
    st["models"][str(body.get("model"))] = st["models"].get(str(body.get("model")), 0) + 1
    if cfg["latency_s"]:
        await asyncio.sleep(cfg["latency_s"])
    if cfg["always_400"] and cfg["always_400"] in text:
        return "400", _json(400, {"error": {"message": "prompt refused by policy", "type": "invalid_request_error"}})
    kind = None
    if cfg["always_500"] and cfg["always_500"] in text:
        kind = "500"
    elif cfg["script"]:  # faults for the next requests, in order (e.g. ["429", "500"]), then none
        kind = cfg["script"].pop(0)
    elif cfg["fault_rate"] and STATE.rng.random() < cfg["fault_rate"]:
        kind = STATE.rng.choice(cfg["fault_kinds"])
    if kind == "429":
        return kind, _json(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                           extra={"Retry-After": cfg["retry_after"]})
    if kind in ("500", "503"):
        return kind, _json(int(kind), {"error": {"message": f"injected {kind}", "type": "server_error"}})
    if kind == "nonjson":
        if STATE.rng.random() < 0.5:
            return kind, _response(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        return kind, _response(200, b'{"id": "chatcmpl-1", "choices": [', "application/json")
    if kind in ("drop", "hang"):
        return kind, None
    st["ok_by_prompt"][digest] = st["ok_by_prompt"].get(digest, 0) + 1
    if path.endswith("/moderations"):
        return "ok", _json(200, _moderation(body))
    return "ok", _json(200, _completion(body, chat=path.endswith("chat/completions")))


def _batch_obj(b: dict) -> dict:
    return {"id": b["id"], "object": "batch", "endpoint": b["endpoint"], "input_file_id": b["input_file_id"],
            "completion_window": "24h", "status": b["status"], "output_file_id": b.get("output_file_id"),
            "error_file_id": b.get("error_file_id"), "created_at": b["created_at"],
            "request_counts": {"total": b["total"], "completed": b.get("completed", 0), "failed": b.get("failed", 0)}}


def _file_obj(fid: str, size: int, purpose: str) -> dict:
    return {"id": fid, "object": "file", "bytes": size, "created_at": int(time.time()), "filename": f"{fid}.jsonl",
            "purpose": purpose, "status": "processed"}


def _run_batch(b: dict) -> None:
    out, err = [], []
    for line in STATE.files[b["input_file_id"]].decode().splitlines():
        if not line.strip():
            continue
        req = json.loads(line)
        text = _prompt_text(req["body"])
        if STATE.config["always_400"] and STATE.config["always_400"] in text:
            err.append({"id": "r", "custom_id": req["custom_id"], "response": {"status_code": 400, "body": {
                "error": {"message": "prompt refused by policy"}}}, "error": None})
            continue
        out.append({"id": "r", "custom_id": req["custom_id"], "error": None, "response": {
            "status_code": 200, "request_id": "x", "body": _completion(req["body"], chat="chat" in req["url"])}})
    for rows, key in ((out, "output_file_id"), (err, "error_file_id")):
        if rows:
            fid = f"file-{len(STATE.files) + 1}"
            STATE.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
            b[key] = fid
    b["completed"], b["failed"], b["status"] = len(out), len(err), "completed"


async def _handle_files_batches(method: str, path: str, headers: dict, body: bytes) -> bytes:
    st = STATE.stats
    if method == "POST" and path == "/v1/files":
        msg = email.parser.BytesParser().parsebytes(
            f"Content-Type: {headers['content-type']}\r\n\r\n".encode() + body)
        data, purpose = b"", "batch"
        for part in msg.get_payload():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                data = part.get_payload(decode=True)
            elif name == "purpose":
                purpose = part.get_payload()
        fid = f"file-{len(STATE.files) + 1}"
        STATE.files[fid] = data
        st["files_uploaded"] += 1
        return _json(200, _file_obj(fid, len(data), purpose))
    if method == "GET" and path.startswith("/v1/files/") and path.endswith("/content"):
        fid = path.split("/")[3]
        return _response(200, STATE.files.get(fid, b""), "application/octet-stream")
    if method == "POST" and path == "/v1/batches":
        req = json.loads(body)
        bid = f"batch_{len(STATE.batches) + 1}"
        total = len([x for x in STATE.files[req["input_file_id"]].splitlines() if x.strip()])
        STATE.batches[bid] = {"id": bid, "endpoint": req["endpoint"], "input_file_id": req["input_file_id"],
                              "status": "validating", "created_at": int(time.time()), "total": total, "polls": 0}
        st["batches_created"] += 1
        return _json(200, _batch_obj(STATE.batches[bid]))
    if method == "GET" and path.startswith("/v1/batches/"):
        b = STATE.batches.get(path.split("/")[3])
        if b is None:
            return _json(404, {"error": {"message": "no such batch"}})
        b["polls"] += 1
        if b["status"] != "completed":
            if b["polls"] > STATE.config["batch_polls"]:
                _run_batch(b)
            else:
                b["status"] = "in_progress"
        return _json(200, _batch_obj(b))
    return _json(404, {"error": {"message": f"no route {method} {path}"}})


async def _connection(reader, writer):
    st = STATE.stats
    try:
        while True:
            req = await _read_request(reader)
            if req is None:
                return
            method, path, headers, body = req
            if path == "/_stats":
                writer.write(_json(200, st))
            elif path == "/_config":
                STATE.config.update(json.loads(body or b"{}"))
                writer.write(_json(200, STATE.config))
            elif path == "/_reset":
                STATE.reset()
                writer.write(_json(200, {"ok": True}))
            elif path == "/v1/models":
                writer.write(_json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]}))
            elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions", "/v1/moderations"):
                st["received"] += 1
                st["api_received"] += 1
                st["paths"][path] = st["paths"].get(path, 0) + 1
                st["in_flight"] += 1
                st["max_in_flight"] = max(st["max_in_flight"], st["in_flight"])
                now = time.monotonic()
                if st["first_arrival"] is None:
                    st["first_arrival"] = now
                if STATE.config.get("trace"):
                    st.setdefault("arrivals", []).append(now)
                try:
                    kind, response = await _handle_api(path, json.loads(body), headers)
                finally:
                    st["in_flight"] -= 1
                    st["last_done"] = time.monotonic()
                if kind in st["faults"]:
                    st["faults"][kind] += 1
                if kind == "ok":
                    st["ok"] += 1
                if kind == "hang":
                    await asyncio.sleep(STATE.config["hang_s"])
                    return
                if response is None:  # dropped connection: close without a byte
                    return
                writer.write(response)
            else:
                st["received"] += 1
                writer.write(await _handle_files_batches(method, path, headers, body))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        try:
            writer.transport.abort()
        except Exception:
            pass


async def serve(port: int) -> None:
    server = await asyncio.start_server(_connection, "127.0.0.1", port, backlog=1024, limit=1 << 24)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    parent = os.getppid()

    async def orphan_watch():  # exit with the process that started us, even if it was killed
        while os.getppid() == parent:
            await asyncio.sleep(1)
        os._exit(0)

    watch = asyncio.create_task(orphan_watch())
    async with server:
        await server.serve_forever()
    watch.cancel()


# ------------------------------------------------------------------------------------ client side


class FaultServer:
    """The fault server in a subprocess; ``url`` is its OpenAI base URL (``http://127.0.0.1:P/v1``)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.llm_fixtures", "--port", "0"], cwd=REPO,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"fault server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/v1"

    def _call(self, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        with urllib.request.urlopen(urllib.request.Request(self.root + path, data=data, method="POST" if data else "GET"),
                                    timeout=10) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        return self._call("/_stats")

    def configure(self, **config) -> dict:
        return self._call("/_config", config)

    def reset(self, **config) -> None:
        self._call("/_config", {"latency_s": 0.0, "fault_rate": 0.0, "fault_kinds": list(FAULT_KINDS),
                                "retry_after": "0.05", "hang_s": 30.0, "batch_polls": 1, "logprobs": False, "script": [],
                                **config})
        self._call("/_reset", {})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TransformersServe:
    """`transformers serve DIR` on loopback (flags from ENVIRONMENT.md); the request's model must be DIR."""

    def __init__(self, model_dir: str, hub_cache: Path, log: Path):
        self.model = model_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        exe = Path(sys.executable).parent / "transformers"
        cmd = [str(exe) if exe.exists() else "transformers", "serve", model_dir, "--host", "127.0.0.1",
               "--port", str(self.port), "--device", "cpu", "--dtype", "float32", "--continuous-batching",
               # A bounded KV cache: by default it reserves 60 % of free RAM (14 GB here), and two servers
               # at once (parallel test runs) ended in the OOM killer.
               "--cb-block-size", "32", "--cb-num-blocks", "512"]
        hub_cache.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
        self.log = log
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"transformers serve did not answer in 120 s: {log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and nothing else
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session", autouse=True)
def builder_cache_session(tmp_path_factory):
    """One BUILDER_CACHE for the whole run, so the packaged model is converted once."""
    old = os.environ.get("BUILDER_CACHE")
    path = tmp_path_factory.mktemp("builder-cache")
    os.environ["BUILDER_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("BUILDER_CACHE", None)
    else:
        os.environ["BUILDER_CACHE"] = old


@pytest.fixture
def fresh_cache(tmp_path, builder_cache_session, monkeypatch):
    """A BUILDER_CACHE with an empty completions store that shares the session's converted models."""
    path = tmp_path / "builder-cache"
    path.mkdir()
    (builder_cache_session / "models").mkdir(exist_ok=True)
    (path / "models").symlink_to(builder_cache_session / "models", target_is_directory=True)
    monkeypatch.setenv("BUILDER_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def smollm2_dir(builder_cache_session) -> str:
    from builder.llm.models import resolve

    return resolve("smollm2-135m").path


@pytest.fixture(scope="session")
def fault_server():
    server = FaultServer()
    yield server
    server.stop()


@pytest.fixture
def faults(fault_server):
    """The session's fault server, reset (no faults, no latency, zero counters) for this test."""
    fault_server.reset()
    return fault_server


@pytest.fixture(scope="session")
def transformers_serve(smollm2_dir, tmp_path_factory):
    if shutil.which("transformers") is None and not (Path(sys.executable).parent / "transformers").exists():
        pytest.skip("transformers CLI not installed (pip install 'transformers[serving]')")
    folder = tmp_path_factory.mktemp("serve")
    server = TransformersServe(smollm2_dir, folder / "hub", folder / "serve.log")
    yield server
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="loopback OpenAI-compatible fault server")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()


def kill_mid_run(faults, args: list[str], cwd, env: dict, *, after_requests: int = 20) -> None:
    """Start ``python -m builder ARGS`` against the fault server (0.1 s latency), kill -9 it once the
    server has seen ``after_requests`` requests, then reset the server's counters for the rerun."""
    faults.configure(latency_s=0.1)
    proc = subprocess.Popen([sys.executable, "-m", "builder", *map(str, args)], cwd=cwd,
                            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while faults.stats()["api_received"] < after_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)
    faults.reset()
