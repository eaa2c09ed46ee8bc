"""`builder pairs --out DIR` replaces only a dataset folder builder wrote, never a user's files (issue 12.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.dataset_dir import MARKER
from tests.conftest import builder, write_jsonl

PAIRS = [{"prompt": f"How do I do thing number {i} safely at home?", "chosen": f"Carefully, step {i}.",
          "rejected": f"Recklessly, way {i}.", "category": "illegal" if i % 2 else "hate"} for i in range(15)]


@pytest.fixture
def judged(tmp_path) -> Path:
    return write_jsonl(tmp_path / "judged.jsonl", PAIRS)


def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def test_a_folder_of_the_users_is_left_alone_and_the_run_exits_2(judged, tmp_path):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "important.txt").write_text("keep me")
    (out / "sub" / "model.bin").write_bytes(b"\0" * 10)
    before = tree(out)
    result = builder("pairs", "--in", judged, "--out", out, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "holds files builder did not write" in result.stderr and "important.txt" in result.stderr
    assert tree(out) == before and (out / "important.txt").read_text() == "keep me"


def test_the_working_folder_and_its_parents_are_refused(judged, tmp_path):
    inner = tmp_path / "scratch2"
    inner.mkdir()
    (inner / "keep.txt").write_text("x")
    for out in (".", "..", "../scratch2"):
        result = builder("pairs", "--in", judged, "--out", out, cwd=inner)
        assert result.returncode == 2 and "working folder" in result.stderr, (out, result.stderr)
        assert "Traceback" not in result.stderr
    assert (inner / "keep.txt").exists() and judged.exists()


def test_a_folder_holding_the_input_is_refused(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    src = write_jsonl(folder / "judged.jsonl", PAIRS)
    result = builder("pairs", "--in", src, "--out", folder, cwd=tmp_path)
    assert result.returncode == 2 and "holds" in result.stderr
    assert src.exists()


def test_a_file_as_out_is_refused_without_leftovers(judged, tmp_path):
    result = builder("pairs", "--in", judged, "--out", judged, cwd=tmp_path)
    assert result.returncode == 2 and "is a file" in result.stderr and "Traceback" not in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_builders_own_folder_is_replaced_whole_and_marked(judged, tmp_path):
    out = tmp_path / "pairs"
    first = builder("pairs", "--in", judged, "--out", out, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (out / MARKER).is_file() and (out / "pairs.jsonl").is_file()
    assert out.stat().st_mode & 0o055 == 0o055  # readable and listable by others under umask 022
    (out / "csv").mkdir(exist_ok=True)  # a stale file of builder's own layout is replaced with the rest
    (out / "csv" / "old.csv").write_text("a,b\n")
    second = builder("pairs", "--in", judged, "--out", out, "--test-size", "0.5", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert not (out / "csv" / "old.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pairs.")]  # no build folders left


def load_in_subprocess(folder: Path, cache: Path, *extra: str) -> dict:
    """datasets.load_dataset("pairs") from the folder above, in a fresh process, as the README says a user
    runs it, with one HF cache shared by the calls."""
    import json
    import subprocess
    import sys

    code = ("import json, sys, datasets; d = datasets.load_dataset(sys.argv[1], *sys.argv[2:]); "
            "print(json.dumps({k: sorted(d[k]['id']) for k in d}))")
    env = {**__import__("os").environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, folder.name, *extra], capture_output=True, text=True, env=env,
                          cwd=folder.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_load_dataset_returns_what_is_on_disk_after_a_rebuild(judged, tmp_path):
    out, cache = tmp_path / "pairs", tmp_path / "hf-cache"
    assert builder("pairs", "--in", judged, "--out", out, "--test-size", "0.2", cwd=tmp_path).returncode == 0
    first = load_in_subprocess(out, cache)
    assert builder("pairs", "--in", judged, "--out", out, "--test-size", "0.5", cwd=tmp_path).returncode == 0
    second = load_in_subprocess(out, cache)
    assert len(second["test_prefs"]) > len(first["test_prefs"])
    on_disk = {split: sorted(r["id"] for r in __import__("polars").read_parquet(next((out / "data").glob(f"{split}-*"))).to_dicts())
               for split in second}
    assert second == on_disk
    assert builder("pairs", "--in", judged, "--out", out, "--test-size", "0.5", "--export", "conversational",
                   cwd=tmp_path).returncode == 0
    assert load_in_subprocess(out, cache, "conversational") == second  # typed message lists load too


def test_test_size_half_of_fifteen_is_seven_test_and_eight_train():
    from builder.stages.pairs import split_by_category

    records = [{"id": f"{i:016x}", "category": "a" if i < 8 else "b"} for i in range(15)]
    splits = split_by_category(records, 0.5, seed=0)
    assert (len(splits["train_prefs"]), len(splits["test_prefs"])) == (8, 7)
    assert {r["category"] for r in splits["test_prefs"]} == {"a", "b"}
    assert split_by_category(list(reversed(records)), 0.5, seed=0) == splits  # order-independent
