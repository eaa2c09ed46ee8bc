"""`builder show ID` follows the pipeline: a kept pair is shown from the dataset's copy, with the
judge's verdict and its split, not from whichever file name sorts last."""

from __future__ import annotations

from builder.records import record_id
from tests.conftest import builder, write_jsonl


def pair(i: int) -> dict:
    rec = {"prompt": f"Question number {i} about topic {i * 7}?", "chosen": f"A careful answer {i}.",
           "rejected": f"A harmful answer {i}.", "category": "hate"}
    rec = {"id": record_id("preference", rec), **rec}
    rec["meta"] = {"source": f"sample.jsonl:{i}", "respond": {"parents": [f"{i:016x}"], "model": "m"}}
    return rec


def test_show_a_kept_pair_gives_the_judge_verdict_and_the_split(tmp_path):
    responded = [pair(i) for i in range(6)]
    judged = [{**r, "meta": {**r["meta"], "judge": {"chosen_harmless": True}}} for r in responded]
    (tmp_path / "data/responded").mkdir(parents=True)
    (tmp_path / "data/judged").mkdir(parents=True)
    write_jsonl(tmp_path / "data/responded/pairs.jsonl", responded)  # sorts after data/pairs/
    write_jsonl(tmp_path / "data/judged/pairs.jsonl", judged)
    made = builder("pairs", "--in", "data/judged/pairs.jsonl", "--out", "data/pairs", "--test-size", "0.5", cwd=tmp_path)
    assert made.returncode == 0, made.stderr

    splits = set()
    for rec in judged:
        shown = builder("show", rec["id"], cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert 'judge: {"chosen_harmless": true}' in shown.stdout
        splits |= {s for s in ("train_prefs", "test_prefs") if f'pairs: {{"split": "{s}"}}' in shown.stdout}
        assert "data/pairs/pairs.jsonl" in shown.stdout.splitlines()[0]
    assert splits == {"train_prefs", "test_prefs"}
