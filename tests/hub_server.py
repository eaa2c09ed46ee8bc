"""A loopback server speaking the part of the Hugging Face Hub HTTP API that huggingface_hub 2.4 and
datasets use to create a dataset repo, commit to it (regular uploads, no LFS, no Xet: clients must set
HF_HUB_DISABLE_XET=1), tag it, list and download its files, and validate a card's YAML.

Repos live in memory as a list of commits (each a full {path: bytes} snapshot) plus tags. Private repos
answer 404 to requests without the right token, as the Hub does. `requests` keeps "METHOD path" of
every call (never headers, so never the token) for tests to inspect; `fail_next` makes the next N
commit calls answer 503 to exercise retries."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import yaml


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, repo_id: str, private: bool):
        self.id, self.private = repo_id, private
        self.commits: list[dict] = [{"sha": hashlib.sha1(repo_id.encode()).hexdigest(), "files": {}, "message": "initial commit"}]
        self.tags: dict[str, str] = {}

    def commit_at(self, revision: str) -> dict | None:
        revision = unquote(revision)
        if revision in ("main", "refs/heads/main"):
            return self.commits[-1]
        revision = self.tags.get(revision.removeprefix("refs/tags/"), revision)
        return next((c for c in self.commits if c["sha"] == revision), None)


class HubState:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self.fail_next = 0
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made by serve()

    def log_message(self, *args):  # quiet: tests read state.requests instead
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body=b"", headers: dict | None = None, content_type="application/json"):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str):
        self._send(status, {"error": message}, {"X-Error-Message": message})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.state.token}"

    def _repo(self, kind: str, repo_id: str, write: bool = False) -> Repo | None:
        repo = self.state.repos.get(repo_id) if kind == "datasets" else None
        if repo is None or ((repo.private or write) and not self._authorized()):
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound",
                                                                 "X-Error-Message": "Repository not found"})
            return None
        return repo

    def _route(self):
        url = urlparse(self.path)
        self.state.requests.append(f"{self.command} {url.path}")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET", r"/api/(datasets)/([^/]+/[^/]+)(?:/revision/(.+))?", self.repo_info),
            ("POST", r"/api/(datasets)/([^/]+/[^/]+)/preupload/(.+)", self.preupload),
            ("POST", r"/api/(datasets)/([^/]+/[^/]+)/commit/(.+)", self.commit),
            ("GET", r"/api/(datasets)/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", self.tree),
            ("POST", r"/api/(datasets)/([^/]+/[^/]+)/paths-info/(.+)", self.paths_info),
            ("POST", r"/api/(datasets)/([^/]+/[^/]+)/tag/(.+)", self.create_tag),
            ("GET", r"/api/(datasets)/([^/]+/[^/]+)/refs", self.refs),
            ("GET|HEAD", r"/(datasets)/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.resolve),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, url.path)
            if match and self.command in method.split("|"):
                with self.state.lock:
                    return handler(*match.groups(), query=query)
        self._error(404, f"no route {self.command} {url.path}")

    do_GET = do_POST = do_HEAD = _route

    # ------------------------------------------------------------------ endpoints
    def create_repo(self, query):
        body = json.loads(self._body() or b"{}")
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        if repo_id in self.state.repos:
            return self._error(409, "You already created this dataset repo")
        self.state.repos[repo_id] = Repo(repo_id, body.get("visibility") == "private" or body.get("private") is True)
        self._send(200, {"url": f"http://{self.headers['Host']}/datasets/{repo_id}", "name": repo_id})

    def validate_yaml(self, query):
        content = json.loads(self._body())["content"]
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            header = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as e:
            return self._error(400, f"Invalid YAML in README.md: {e}")
        if not isinstance(header, dict):
            return self._error(400, "README.md metadata must be a mapping")
        self._send(200, {"errors": [], "warnings": []})

    def repo_info(self, kind, repo_id, revision, query):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        commit = repo.commit_at(revision or "main")
        if commit is None:
            return self._send(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound",
                                                                  "X-Error-Message": "Invalid rev id"})
        self._send(200, {"id": repo.id, "_id": repo.id, "author": repo.id.split("/")[0], "sha": commit["sha"],
                         "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                         "tags": [], "lastModified": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                         "siblings": [{"rfilename": p} for p in sorted(commit["files"])]})

    def preupload(self, kind, repo_id, revision, query):
        repo = self._repo(kind, repo_id, write=True)
        if repo is None:
            return
        files = repo.commit_at(revision)["files"]
        entries = json.loads(self._body())["files"]
        self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                    "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None}
                                   for f in entries]})

    def commit(self, kind, repo_id, revision, query):
        body = self._body()
        if self.state.fail_next:
            self.state.fail_next -= 1
            return self._error(503, "Service temporarily unavailable")
        repo = self._repo(kind, repo_id, write=True)
        if repo is None:
            return
        files = dict(repo.commit_at(revision)["files"])
        summary = ""
        for line in body.decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value["summary"]
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif item["key"] == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                return self._error(400, f"this loopback Hub has no LFS; got {item['key']}")
        sha = hashlib.sha1(json.dumps([repo.commits[-1]["sha"], summary, sorted((p, git_blob_sha(d)) for p, d in files.items())]).encode()).hexdigest()
        repo.commits.append({"sha": sha, "files": files, "message": summary})
        self._send(200, {"commitUrl": f"http://{self.headers['Host']}/datasets/{repo_id}/commit/{sha}",
                         "commitOid": sha, "pullRequestUrl": None})

    def _entries(self, files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        out, dirs = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    dirs.add("/".join(([prefix] if prefix else []) + parts[:depth]))
            if recursive or len(parts) == 1:
                out.append({"type": "file", "oid": git_blob_sha(files[path]), "size": len(files[path]), "path": path})
        return [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                for d in sorted(dirs)] + out

    def tree(self, kind, repo_id, revision, path, query):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        commit = repo.commit_at(revision)
        if commit is None:
            return self._send(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        self._send(200, self._entries(commit["files"], unquote(path or ""), query.get("recursive") in ("true", "1", "True")))

    def paths_info(self, kind, repo_id, revision, query):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        form = parse_qs(self._body().decode())
        commit = repo.commit_at(revision)
        if commit is None:
            return self._send(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        wanted = {p.strip("/") for p in form.get("paths", [])}
        every = self._entries(commit["files"], "", recursive=True)
        self._send(200, [e for e in every if e["path"] in wanted])

    def create_tag(self, kind, repo_id, revision, query):
        repo = self._repo(kind, repo_id, write=True)
        if repo is None:
            return
        tag = json.loads(self._body())["tag"]
        commit = repo.commit_at(revision)
        if tag in repo.tags:
            return self._error(409, f"Tag {tag} already exists")
        repo.tags[tag] = commit["sha"]
        self._send(200, {})

    def refs(self, kind, repo_id, query):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        self._send(200, {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.commits[-1]["sha"]}],
                         "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": sha} for t, sha in repo.tags.items()],
                         "converts": []})

    def resolve(self, kind, repo_id, revision, path, query):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        commit = repo.commit_at(revision)
        data = commit and commit["files"].get(unquote(path))
        if data is None:
            return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound",
                                                                   "X-Error-Message": "Entry not found"})
        headers = {"X-Repo-Commit": commit["sha"], "ETag": f'"{git_blob_sha(data)}"', "Accept-Ranges": "bytes"}
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if ranged:
            start = int(ranged.group(1))
            end = min(int(ranged.group(2)) if ranged.group(2) else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start:end + 1], headers, "application/octet-stream")
        self._send(200, data, headers, "application/octet-stream")


def serve(token: str) -> tuple[ThreadingHTTPServer, HubState]:
    """Start the loopback Hub on a free port in a daemon thread."""
    state = HubState(token)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state
