"""`builder publish`: push a builder dataset to the Hugging Face Hub as one tagged commit.

Order matters: validate everything locally (records, licence, card) before touching the network, so
invalid data exits 2 with nothing pushed. The splits (parquet) and the card go in ONE commit
(HfApi.create_commit), so a version is either wholly on the Hub or not at all. Files are compared with
what the Hub holds (git blob sha1, or sha256 for LFS files): the same content again makes no commit.
The token comes from HF_TOKEN or the saved Hugging Face login and is only ever passed to HfApi."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder import console
from builder.errors import BadInput, RunFailed

ATTEMPTS = 4  # network calls are retried with 1, 2, 4 s pauses


@dataclass
class Plan:
    repo: str
    tag: str
    private: bool
    exists: bool
    files: dict[str, Path]  # path in repo -> staged local file
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commit: str | None = None

    @property
    def dirty(self) -> bool:
        return bool(self.added or self.changed or self.deleted)

    def lines(self) -> list[str]:
        state = "exists" if self.exists else "will be created"
        out = [f"{self.repo} ({'private' if self.private else 'public'}, {state}), tag {self.tag}:"]
        for name, paths in (("add", self.added), ("update", self.changed), ("delete", self.deleted),
                            ("unchanged", self.unchanged)):
            out += [f"  {name:9} {p}" + (f" ({self.files[p].stat().st_size} bytes)" if p in self.files else "")
                    for p in paths]
        return out


def resolve_target(target: str) -> Path:
    """A path, or the name of an artifact in dvc.yaml (`builder publish safer-instruct-pairs`)."""
    if Path(target).exists():
        return Path(target)
    import yaml
    dvc_yaml = Path("dvc.yaml")
    artifacts = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("artifacts", {}) if dvc_yaml.exists() else {}
    if target in artifacts:
        path = Path(artifacts[target]["path"])
        if not path.exists():
            raise BadInput(f"artifact {target}: {path} does not exist here; run `dvc pull {path}` or `dvc repro` first")
        return path
    known = ", ".join(sorted(artifacts)) or "none in dvc.yaml"
    raise BadInput(f"{target}: no such file, folder or DVC artifact (artifacts: {known})")


def default_tag() -> str:
    done = subprocess.run(["git", "describe", "--tags", "--always"], capture_output=True, text=True)
    if done.returncode or not done.stdout.strip():
        raise BadInput("no --tag given and `git describe` found no revision; pass --tag VERSION")
    return done.stdout.strip()


def stage(source: Path, out: Path, *, repo: str, license: str | None, metrics_dir: Path) -> dict[str, Path]:
    """Validate the records and lay out exactly the files to push: parquet splits and the card."""
    from builder.publish.card import data_files, read_split_rows, write_card
    from builder.records import guess_kind, write_records
    from builder.validate import check

    if source.is_dir():
        for files in data_files(source).values():
            for rel in (f for split_files in files.values() for f in split_files):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / rel, out / rel)
    else:
        rows = read_split_rows(source)["train"]
        write_records(out / "data" / "train-00000-of-00001.parquet", rows)
    problems = []
    for parquet in sorted(out.glob("data/*.parquet")):
        result = check(str(parquet), guess_kind(str(parquet)), semantic=False)
        problems += [f"{parquet.name} {entry['where']}: {entry['detail']}" for entry in result.bad]
    if problems:
        raise BadInput(f"{source}: {len(problems)} invalid records, nothing pushed; fix them "
                       f"(`builder validate`) and publish again:\n  " + "\n  ".join(problems[:20]))
    write_card(out, out / "README.md", license=license, metrics_dir=metrics_dir, pretty_name=source.name, repo_id=repo)
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}


def _oids(path: Path) -> set[str]:
    """The ids the Hub may list a file under: git blob sha1 (regular files) and sha256 (LFS)."""
    from huggingface_hub.utils.sha import git_hash
    data = path.read_bytes()
    return {git_hash(data), hashlib.sha256(data).hexdigest()}


def network_errors() -> tuple[type, ...]:
    import httpx2  # the HTTP client huggingface_hub 2.x uses
    from huggingface_hub.errors import HfHubHTTPError
    return httpx2.TransportError, HfHubHTTPError


def client_error(e: Exception) -> int | None:
    """The status of a 4xx answer (a refusal: retrying cannot help), else None (network, 5xx)."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    return status if status is not None and status < 500 else None


def retry(what: str, fn, *args, **kwargs):
    """Call fn, retrying network failures and 5xx answers; client errors (4xx) are not retried."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return fn(*args, **kwargs)
        except network_errors() as e:
            if client_error(e):
                raise
            if attempt == ATTEMPTS:
                raise RunFailed(f"the Hub did not answer {what} after {ATTEMPTS} attempts ({type(e).__name__}: "
                                f"{str(e).splitlines()[0]}); nothing half-published: a commit is all or nothing. "
                                "Check the network / HF_ENDPOINT and run the same command again") from None
            time.sleep(2 ** (attempt - 1))


def plan(api, repo: str, tag: str, public: bool, files: dict[str, Path]) -> Plan:
    from huggingface_hub.errors import RepositoryNotFoundError
    try:
        info = retry("repo_info", api.repo_info, repo, repo_type="dataset")
    except RepositoryNotFoundError:
        return Plan(repo, tag, not public, False, files, added=sorted(files))
    if bool(info.private) == public:
        now = "private" if info.private else "public"
        raise BadInput(f"{repo} is {now} on the Hub and this publish asks for {'public' if public else 'private'}; "
                       "builder never flips visibility: change it on the Hub, or " +
                       ("drop --public" if info.private else "pass --public") + " to keep it as it is")
    remote = {}
    for entry in retry("list_repo_tree", lambda: list(api.list_repo_tree(repo, repo_type="dataset", recursive=True))):
        if hasattr(entry, "blob_id"):
            remote[entry.path] = {entry.blob_id} | ({entry.lfs.sha256} if entry.lfs else set())
    result = Plan(repo, tag, bool(info.private), True, files, commit=info.sha)
    for path, local in files.items():
        if path not in remote:
            result.added.append(path)
        elif remote[path] & _oids(local):
            result.unchanged.append(path)
        else:
            result.changed.append(path)
    # Remote data files that this version no longer has (a split that disappeared) are deleted.
    result.deleted = sorted(p for p in remote if p not in files and p.endswith(".parquet"))
    return result


def publish(target: str, repo: str, *, tag: str | None = None, public: bool = False, dry_run: bool = False,
            license: str | None = None, metrics_dir: Path = Path("metrics"), say=console.info) -> Plan:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

    source = resolve_target(target)
    if "/" not in repo:
        raise BadInput(f"--repo {repo}: write ORG/NAME")
    tag = tag or default_tag()
    token = get_token()
    if token is None and not dry_run:
        raise BadInput("no Hugging Face token: set HF_TOKEN or run `hf auth login` (it is never written anywhere)")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="builder-publish-") as tmp:
        files = stage(source, Path(tmp), repo=repo, license=license, metrics_dir=metrics_dir)
        result = plan(api, repo, tag, public, files)
        for line in result.lines():
            say(line)
        if dry_run:
            say("dry run: nothing pushed")
            return result
        if not result.exists:
            retry("create_repo", api.create_repo, repo, repo_type="dataset", private=not public, exist_ok=True)
        if result.dirty:
            operations = [CommitOperationAdd(path, str(files[path])) for path in result.added + result.changed]
            operations += [CommitOperationDelete(path) for path in result.deleted]
            commit = _commit_once(api, repo, tag, operations, public, files)
            result.commit = commit
            say(f"committed {len(operations)} files as {commit[:12]}")
        else:
            say(f"the Hub already holds this content at {result.commit[:12]}: no new commit")
        refs = retry("list_repo_refs", api.list_repo_refs, repo, repo_type="dataset")
        tagged = {t.name: t.target_commit for t in refs.tags}
        if tag in tagged and tagged[tag] != result.commit:
            raise BadInput(f"tag {tag} already names another commit ({tagged[tag][:12]}) on {repo}; "
                           "tags are versions and never move: pass a new --tag")
        if tag not in tagged:
            retry("create_tag", api.create_tag, repo, tag=tag, revision=result.commit, repo_type="dataset")
        say(f"tagged {repo}@{tag} -> {result.commit[:12]}")
        return result


def _commit_once(api, repo: str, tag: str, operations, public: bool, files: dict[str, Path]) -> str:
    """create_commit, retried; before each retry ask the Hub whether the lost attempt landed after all,
    so a retry never makes a second commit."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return api.create_commit(repo, operations, commit_message=f"Publish {tag}", repo_type="dataset").oid
        except network_errors() as e:
            if status := client_error(e):
                raise RunFailed(f"the Hub refused the commit ({status}: {str(e).splitlines()[0]}); nothing was pushed") from None
            landed = plan(api, repo, tag, public, files)
            if not landed.dirty:
                return landed.commit
            if attempt == ATTEMPTS:
                raise RunFailed(f"the commit to {repo} failed {ATTEMPTS} times ({type(e).__name__}); nothing was "
                                "pushed (a commit is all or nothing). Run the same command again") from None
            for op in operations:  # an operation object may be used in one commit only
                op._is_committed = False
            time.sleep(2 ** (attempt - 1))
