"""Issue 11: dataset cards, record-level diffs and publishing to a (loopback) Hugging Face Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, builder, write_jsonl

TOKEN = "hf_loopbackSECRETtoken0123456789"
SEED_SOURCE = "/work/shared/seed-data/safer-instruct/responses.csv"  # a seed path: CC BY-NC 4.0


def judged(n: int = 12, *, source: str | None = SEED_SOURCE, answer: str = "I'd rather not insult anyone.") -> list[dict]:
    return [{"prompt": f"Tell me something mean about my neighbour number {i}.", "chosen": answer,
             "rejected": f"Neighbour {i} is an idiot and everyone knows it.", "category": ("hate", "illegal")[i % 2],
             "meta": ({"source": f"{source}:{i + 2}"} if source else {}) | {"respond": {"parents": [], "model": "smollm2-135m"}}}
            for i in range(n)]


def make_pairs(tmp: Path, name: str, records: list[dict], *extra: str) -> Path:
    write_jsonl(tmp / f"{name}.jsonl", records)
    done = builder("pairs", "--in", tmp / f"{name}.jsonl", "--out", tmp / name, "--test-size", "0.25",
                   "--metrics", tmp / "metrics" / "pairs.json", *extra, cwd=tmp)
    assert done.returncode == 0, done.stderr
    return tmp / name


# ------------------------------------------------------------------------------------------- card


def test_card_header_validates_and_every_number_equals_the_metrics(tmp_path):
    from huggingface_hub import DatasetCard, DatasetCardData

    pairs = make_pairs(tmp_path, "pairs", judged())
    for stage in ("respond", "judge"):  # the repo's own metrics of earlier stages, with rejects
        (tmp_path / "metrics" / f"{stage}.json").write_text((REPO / "metrics" / f"{stage}.json").read_text())
    done = builder("card", pairs, "--out", tmp_path / "card.md", "--metrics", tmp_path / "metrics", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    card = DatasetCard.load(tmp_path / "card.md")
    header = card.data.to_dict()
    assert DatasetCardData(**header).to_dict() == header  # round trip through huggingface_hub's card model
    assert header["license"] == "cc-by-nc-4.0" and "research-only" in card.text
    assert {c["config_name"] for c in header["configs"]} == {"default"}
    for stage in ("respond", "judge", "pairs"):
        m = json.loads((tmp_path / "metrics" / f"{stage}.json").read_text())
        assert (f"| {stage} | {m['in']} | {m['out']} | {m['rejected']} | {json.dumps(m['rejected_by_reason'])} | "
                f"{json.dumps(m['rejected_by_category'])} |") in card.text
    metrics = json.loads((tmp_path / "metrics" / "pairs.json").read_text())
    for split, size in metrics["splits"].items():
        assert f"| {split} | {size} |" in card.text
    assert "smollm2-135m" in card.text and "load_dataset" in card.text and "DPOTrainer" in card.text
    # `builder pairs` wrote the same card into its output folder
    assert DatasetCard.load(pairs / "README.md").data.license == "cc-by-nc-4.0"


def test_card_refuses_to_guess_a_licence(tmp_path):
    pairs = make_pairs(tmp_path, "pairs", judged(source="/somewhere/scraped.csv"))
    done = builder("card", pairs, "--metrics", tmp_path / "metrics", cwd=tmp_path)
    assert done.returncode == 2 and "--license" in done.stderr and "scraped.csv" in done.stderr
    done = builder("card", pairs, "--license", "cc-by-4.0", "--metrics", tmp_path / "metrics", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "license: cc-by-4.0" in (pairs / "README.md").read_text()


# ------------------------------------------------------------------------------------------- diff


def test_diff_names_changed_removed_added_and_split_moves(tmp_path):
    old = make_pairs(tmp_path, "old", judged())
    records = judged()
    records[0]["chosen"] = "No. Let's talk about something kinder instead."  # changed content, same source
    del records[1]  # removed
    records.append(judged(13)[12])  # added
    new = make_pairs(tmp_path, "new", records)
    done = builder("diff", old, new, "--json", tmp_path / "diff.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "diff.json").read_text())
    assert (report["counts"]["changed"], report["counts"]["removed"], report["counts"]["added"]) == (1, 1, 1)
    assert report["changed"][0]["fields"] == ["chosen"] and report["changed"][0]["key"].endswith(":2")
    assert report["by_category"]["removed"] == {"illegal": 1}
    assert "~1 changed" in done.stdout and "kinder" in done.stdout
    # the stratified split moved some prompts: every move is reported, train<->test ones as leaks
    assert report["counts"]["leaks"] == len(report["leaks"]) <= report["counts"]["moved"]
    assert report["moved"]
    for entry in report["moved"][:5]:  # and the terminal names the moved records
        assert f"{entry['old_split']} -> {entry['new_split']}" in done.stdout and entry["prompt"][:30] in done.stdout
    failed = builder("diff", old, new, "--fail-on", "removed>0,added>5", cwd=tmp_path)
    assert failed.returncode == 1 and "removed 1 > 0" in failed.stderr
    assert builder("diff", old, new, "--fail-on", "removed>>0", cwd=tmp_path).returncode == 2

    # a record the pairs stage rejects in the new version is reported under that stage and reason
    records = judged()
    records[5]["chosen"] = records[5]["rejected"]
    write_jsonl(tmp_path / "third.jsonl", records)
    assert builder("pairs", "--in", tmp_path / "third.jsonl", "--out", tmp_path / "third", "--test-size", "0.25",
                   "--rejects", tmp_path / "third-rejects.jsonl", cwd=tmp_path).returncode == 0
    done = builder("diff", old, tmp_path / "third", "--rejects", tmp_path / "third-rejects.jsonl",
                   "--json", tmp_path / "third.json", cwd=tmp_path)
    report = json.loads((tmp_path / "third.json").read_text())
    assert report["counts"]["removed"] == 1 and list(report["by_stage"]["removed"]) == ["pairs: chosen-equals-rejected"], done.stdout


def test_diff_reads_an_earlier_revision_through_dvc(tmp_path):
    def run(*cmd):
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
        assert done.returncode == 0, done.stderr
    run("git", "init", "-q")
    run("git", "config", "user.email", "t@example.com")
    run("git", "config", "user.name", "t")
    run(sys.executable, "-m", "dvc", "init", "-q")
    make_pairs(tmp_path, "pairs", judged())
    run(sys.executable, "-m", "dvc", "add", "-q", "pairs")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "v1")
    records = judged()
    records[3]["chosen"] = "Let's not; how about a kind word for them instead?"
    make_pairs(tmp_path, "pairs", records)
    done = builder("diff", "HEAD:pairs", "pairs", "--json", tmp_path / "d.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["counts"]["changed"] == 1 and report["counts"]["added"] == report["counts"]["removed"] == 0
    assert report["changed"][0]["key"].endswith(":5") and report["changed"][0]["fields"] == ["chosen"]
    assert builder("diff", "nosuchrev:pairs", "pairs", cwd=tmp_path).returncode == 2


# ------------------------------------------------------------------------------------------- publish


@pytest.fixture
def hub(tmp_path):
    from tests.hub_server import serve
    server, state = serve(TOKEN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN,
            "HF_HOME": str(tmp_path / "hf-home"), "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"),
            "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}
    yield state, env
    server.shutdown()


def publish(tmp: Path, env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", "publish", *map(str, args)], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)


def test_publish_round_trip_private_tagged_idempotent_and_token_never_written(tmp_path, hub):
    state, env = hub
    pairs = make_pairs(tmp_path, "pairs", judged())
    dry = publish(tmp_path, env, pairs, "--repo", "org/pairs", "--tag", "v1", "--dry-run")
    assert dry.returncode == 0 and "add       data/train_prefs" in dry.stderr and not state.repos
    done = publish(tmp_path, env, pairs, "--repo", "org/pairs", "--tag", "v1")
    assert done.returncode == 0, done.stderr
    repo = state.repos["org/pairs"]
    assert repo.private and repo.tags["v1"] == repo.commits[-1]["sha"] and repo.commits[-1]["message"] == "Publish v1"
    local_files = {p.relative_to(pairs).as_posix() for p in (pairs / "data").glob("*.parquet")}
    assert set(repo.commits[-1]["files"]) == {"README.md", *local_files} and len(local_files) == 2
    commits = len(repo.commits)
    again = publish(tmp_path, env, pairs, "--repo", "org/pairs", "--tag", "v1")
    assert again.returncode == 0 and len(repo.commits) == commits and "no new commit" in again.stderr

    load = ("import datasets, json; ds = datasets.load_dataset('org/pairs', revision='v1'); "
            "print(json.dumps({s: ds[s].to_list() for s in ds}))")
    loaded = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    import polars as pl
    local = {s: pl.read_parquet(next((pairs / "data").glob(f"{s}-*.parquet"))).to_dicts() for s in ("train_prefs", "test_prefs")}
    assert json.loads(loaded.stdout.splitlines()[-1]) == local

    outputs = done.stdout + done.stderr + dry.stdout + dry.stderr + again.stdout + again.stderr + loaded.stderr
    assert TOKEN not in outputs and TOKEN not in " ".join(state.requests)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_publish_refuses_invalid_data_and_visibility_flips_pushing_nothing(tmp_path, hub):
    state, env = hub
    pairs = make_pairs(tmp_path, "pairs", judged())
    import polars as pl
    train = next((pairs / "data").glob("train_prefs-*.parquet"))
    pl.read_parquet(train).with_columns(pl.col("rejected").alias("chosen")).write_parquet(train)  # chosen == rejected
    bad = publish(tmp_path, env, pairs, "--repo", "org/bad", "--tag", "v1")
    assert bad.returncode == 2 and "nothing pushed" in bad.stderr and not state.repos

    good = make_pairs(tmp_path, "good", judged())
    assert publish(tmp_path, env, good, "--repo", "org/good", "--tag", "v1", "--public").returncode == 0
    flip = publish(tmp_path, env, good, "--repo", "org/good", "--tag", "v2")
    assert flip.returncode == 2 and "never flips" in flip.stderr and "v2" not in state.repos["org/good"].tags


def test_publish_retries_a_failed_commit_and_makes_exactly_one(tmp_path, hub):
    state, env = hub
    pairs = make_pairs(tmp_path, "pairs", judged())
    state.fail_next = 2  # the first two commit calls answer 503
    done = publish(tmp_path, env, pairs, "--repo", "org/pairs", "--tag", "v1")
    assert done.returncode == 0, done.stderr
    assert len(state.repos["org/pairs"].commits) == 2  # the initial commit + exactly one publish
    assert state.requests.count("POST /api/datasets/org/pairs/commit/main") == 3


def test_publish_by_dvc_artifact_name_and_unknown_name(tmp_path, hub):
    state, env = hub
    make_pairs(tmp_path, "pairs", judged())
    (tmp_path / "dvc.yaml").write_text("artifacts:\n  my-pairs:\n    path: pairs\n    type: dataset\n")
    done = publish(tmp_path, env, "my-pairs", "--repo", "org/art", "--tag", "v1")
    assert done.returncode == 0, done.stderr and "org/art" in state.repos
    unknown = publish(tmp_path, env, "nope", "--repo", "org/art", "--tag", "v1")
    assert unknown.returncode == 2 and "my-pairs" in unknown.stderr


def test_publish_to_an_unreachable_hub_retries_then_fails_clearly(tmp_path, hub):
    state, env = hub
    pairs = make_pairs(tmp_path, "pairs", judged())
    done = publish(tmp_path, {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}, pairs, "--repo", "org/pairs", "--tag", "v1")
    assert done.returncode == 1 and "after 4 attempts" in done.stderr and "Traceback" not in done.stderr
    assert TOKEN not in done.stderr + done.stdout
