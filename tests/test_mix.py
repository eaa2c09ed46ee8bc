"""builder mix: Safety-Tuned LLaMAs and Cross-Task Defense mixes, exact counts, nested and reproducible
draws, eval-leak exclusion, and the `mix` / `mix_family` DVC stages swept with `dvc exp run`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.records import record_id
from builder.stages.mix import TASK_SUFFIXES, TASKS
from tests.conftest import REPO, builder, copy_project, read_jsonl, write_jsonl

SAMPLE = REPO / "data" / "sample"
SEED_SAFETY = "safety-tuned-llamas/data/training/safety_only_data_Instructions.json"
CTD_EVAL = "safety-defense/instruction-llms-safety-eval/data/evaluation"
REFUSAL = "No. That text is harmful and I will not work with it."
# The seeds' suffixes spelled out (test_task_suffixes_are_the_seed_eval_files_exactly checks them against
# the seed files): no newline before summarize/translate, "3 sentence." as in test_summarize.json.
SUFFIXES = {
    "case": "\nWrite the above sentence using proper case.",
    "cloze": "\n\nWrite the next sentence.",
    "sentiment": "\nHow would you describe the sentiment of this document?",
    "summarize": "Summarize the above article briefly in 3 sentence.",
    "translate": "Translate the above article from English to Chinese: ",
}


def load(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_mix(tmp_path: Path, *args, out: str = "mix.json", general=SAMPLE / "general.json",
            safety=SAMPLE / "safety.json"):
    """Run the real CLI in tmp_path (no params.yaml there, so only the given flags count)."""
    out_path = tmp_path / out
    result = builder("mix", "--general", general, "--safety", safety, "--out", out_path,
                     "--metrics", tmp_path / f"{out_path.stem}.report.json", *args, cwd=tmp_path)
    return result, out_path, tmp_path / f"{out_path.stem}.manifest.json", tmp_path / f"{out_path.stem}.report.json"


def triple(rec: dict) -> tuple[str, str, str]:
    return rec["instruction"], rec.get("input") or "", rec["output"]


# ---------------------------------------------------------------------------------- the seeds' suffixes


def test_task_suffixes_are_the_seed_eval_files_exactly(seed):
    """Every instruction of test_<task>.json is the same document + TASK_SUFFIXES[task], nothing between."""
    assert TASK_SUFFIXES == SUFFIXES
    docs = None
    for task in TASKS:
        instructions = load(seed / CTD_EVAL / f"test_{task}.json")["instructions"]
        suffix = TASK_SUFFIXES[task]
        assert all(text.endswith(suffix) for text in instructions), task
        these = [text[: -len(suffix)] for text in instructions]
        docs = docs or these
        assert these == docs, task  # the five files share their documents: the suffix is all that differs
    assert not TASK_SUFFIXES["summarize"].startswith("\n") and TASK_SUFFIXES["translate"].endswith(": ")


# ------------------------------------------------------------------------- Safety-Tuned LLaMAs mixes


def test_seed_safety_file_family_counts_nesting_and_records(seed, tmp_path):
    general = load(SAMPLE / "general.json")
    seed_triples = {triple(r) for r in load(seed / SEED_SAFETY)}
    mixes = {}
    for n in (100, 300, 2000):
        result, out, manifest, report = run_mix(tmp_path, "--n", n, "--seed", 7, out=f"saferpaca_{n}.json",
                                                safety=seed / SEED_SAFETY)
        assert result.returncode == 0, result.stderr
        records, man, rep = load(out), load(manifest), load(report)
        assert len(records) == len(general) + n and rep["examples"] == len(general) + n
        assert all(list(r) == ["instruction", "input", "output"] for r in records)  # Alpaca, like the seeds'
        assert records[: len(general)] == general  # general order kept, nothing removed here
        drawn = records[len(general):]
        assert all(triple(r) in seed_triples for r in drawn) and len({triple(r) for r in drawn}) == n
        assert man["safety_ids"] == [record_id("sft", r) for r in drawn]
        assert rep["safety"] == {"read": 2483, "usable": 2483, "drawn": n, "excluded_duplicate": 0,
                                 "excluded_contaminated": 0, "excluded_empty": 0}
        assert rep["by_task"] == {"none": n} and rep["by_source"][str(seed / SEED_SAFETY)] == n
        mixes[n] = (records, man["safety_ids"])
    # nested: for one seed the N = 100 draw is the start of the N = 300 draw, and so on
    assert mixes[300][0][: len(general) + 100] == mixes[100][0]
    assert mixes[2000][1][:300] == mixes[300][1]


def test_n_larger_than_the_safety_examples_exits_2_saying_how_many(seed, tmp_path):
    result, out, manifest, _ = run_mix(tmp_path, "--n", 2484, safety=seed / SEED_SAFETY)
    assert result.returncode == 2
    assert "has only 2483 usable safety examples (2483 read); use --n 2483 or fewer (params: mix.n)" in result.stderr
    assert not out.exists() and not manifest.exists()
    result, *_ = run_mix(tmp_path, "--n", 61)
    assert result.returncode == 2 and "only 60 usable safety examples" in result.stderr
    result, *_ = run_mix(tmp_path, "--n", -1)
    assert result.returncode == 2 and "cannot be negative" in result.stderr
    result, *_ = run_mix(tmp_path, "--n", 3, "--task", "poetry")
    assert result.returncode == 2 and "unknown task" in result.stderr


def test_same_inputs_and_seed_are_byte_identical_another_seed_another_sample(tmp_path):
    for name in ("mix.json", "mix.jsonl", "mix.parquet"):
        first = None
        for _ in range(2):
            result, out, manifest, report = run_mix(tmp_path, "--n", 30, "--seed", 1, out=name)
            assert result.returncode == 0, result.stderr
            card = out.with_name(f"{out.stem}.card.md")
            blobs = [out.read_bytes(), manifest.read_bytes(), report.read_bytes(), card.read_bytes()]
            assert first is None or blobs == first, name
            assert b"git revision" not in blobs[-1]  # a DVC output: nothing in it may change without the data
            first = blobs
    ids = {}
    for s in (1, 2):
        result, out, manifest, _ = run_mix(tmp_path, "--n", 30, "--seed", s)
        assert result.returncode == 0, result.stderr
        ids[s] = load(manifest)["safety_ids"]
    assert len(ids[1]) == len(ids[2]) == 30 and set(ids[1]) != set(ids[2])


def test_n_zero_is_the_general_data_alone(tmp_path):
    result, out, manifest, report = run_mix(tmp_path, "--n", 0)
    assert result.returncode == 0, result.stderr
    assert load(out) == load(SAMPLE / "general.json")
    assert load(manifest)["safety_ids"] == [] and load(report)["safety"]["drawn"] == 0


def test_jsonl_output_keeps_ids_categories_and_provenance(tmp_path):
    result, out, manifest, report = run_mix(tmp_path, "--n", 20, "--task", "case", "--refusal", REFUSAL,
                                            out="mix.jsonl", safety=SAMPLE / "responses.jsonl")
    assert result.returncode == 0, result.stderr
    drawn = read_jsonl(out)[150:]
    assert [r["meta"]["mix"]["source_id"] for r in drawn] == load(manifest)["safety_ids"]
    assert [r["id"] for r in drawn] == [record_id("sft", r) for r in drawn]
    assert sum(load(report)["by_category"].values()) == 20 and "none" not in load(report)["by_category"]


# --------------------------------------------------------------------------- removals, with counts


def test_general_items_duplicating_a_safety_example_are_removed_and_counted(tmp_path):
    general, safety = load(SAMPLE / "general.json"), load(SAMPLE / "safety.json")
    exact = dict(safety[3])
    near = {"instruction": "  " + safety[10]["instruction"].upper().rstrip("?.!") + " !!", "input": "",
            "output": "Sure, here is exactly how."}  # same request up to case, punctuation and spacing
    path = tmp_path / "general.json"
    path.write_text(json.dumps(general[:50] + [exact] + general[50:100] + [near] + general[100:]), encoding="utf-8")
    result, out, manifest, report = run_mix(tmp_path, "--n", 0, general=path)
    assert result.returncode == 0, result.stderr
    assert load(out) == general  # both removed, the rest in its order
    rep, man = load(report), load(manifest)
    assert rep["general"] == {"read": 152, "kept": 150, "removed_duplicate": 2, "removed_contaminated": 0}
    assert [e["reason"] for e in man["general"]["removed"]] == ["duplicate", "duplicate"]
    assert [e["detail"] for e in man["general"]["removed"]] == [
        f"duplicate of safety {record_id('sft', safety[3])}", f"duplicate of safety {record_id('sft', safety[10])}"]


def test_eval_leaks_are_never_drawn_nor_kept_and_are_counted(tmp_path):
    general, safety = load(SAMPLE / "general.json"), load(SAMPLE / "safety.json")
    leaking_safety = max(safety, key=lambda r: len(r["instruction"].split()))
    leaking_general = max(general, key=lambda r: len(r["instruction"].split()))
    assert len(leaking_safety["instruction"].split()) >= 8 and len(leaking_general["instruction"].split()) >= 8
    suite = tmp_path / "I-Leaky.json"
    suite.write_text(json.dumps({"instructions": ["Please: " + leaking_safety["instruction"].lower(),
                                                  leaking_general["instruction"] + " Thanks."], "inputs": []}))
    result, out, manifest, report = run_mix(tmp_path, "--n", 59, "--against", suite)
    assert result.returncode == 0, result.stderr
    records, rep, man = load(out), load(report), load(manifest)
    assert triple(leaking_safety) not in {triple(r) for r in records}
    assert triple(leaking_general) not in {triple(r) for r in records}
    assert rep["safety"]["excluded_contaminated"] == 1 and rep["safety"]["usable"] == 59
    assert rep["general"]["removed_contaminated"] == 1 and len(records) == 149 + 59
    [entry] = man["safety"]["excluded"]
    assert (entry["id"], entry["stage"], entry["reason"], entry["detail"]) == (
        record_id("sft", leaking_safety), "mix", "contaminated", f"overlaps eval prompt {suite}:instructions[0]")
    result, *_ = run_mix(tmp_path, "--n", 60, "--against", suite)
    assert result.returncode == 2
    assert "only 59 usable safety examples (60 read, 1 excluded as leaking an eval prompt)" in result.stderr


# ----------------------------------------------------------------------------- Cross-Task Defense


@pytest.mark.parametrize("task", TASKS)
def test_cross_task_examples_from_responses_are_document_suffix_refusal(tmp_path, task):
    texts = {record_id("response", r): r for r in read_jsonl(SAMPLE / "responses.jsonl")}
    result, out, manifest, report = run_mix(tmp_path, "--n", 20, "--task", task, "--refusal", REFUSAL,
                                            safety=SAMPLE / "responses.jsonl")
    assert result.returncode == 0, result.stderr
    drawn, man = load(out)[150:], load(manifest)
    assert len(drawn) == 20 and man["tasks"] == [task] * 20 and load(report)["by_task"] == {task: 20}
    for rec, source_id in zip(drawn, man["safety_ids"], strict=True):
        assert rec == {"instruction": texts[source_id]["text"] + SUFFIXES[task], "input": "", "output": REFUSAL}


def test_cross_task_mix_takes_n_per_task_and_nests(tmp_path):
    draws = {}
    for n in (4, 12):
        result, out, manifest, report = run_mix(tmp_path, "--n", n, "--task", "mix", out=f"mix{n}.json",
                                                safety=SAMPLE / "responses.jsonl")
        assert result.returncode == 0, result.stderr
        assert load(report)["by_task"] == {t: n for t in sorted(TASKS)}
        man = load(manifest)
        assert len(set(man["safety_ids"])) == 5 * n  # a distinct document for every example
        draws[n] = load(out)
    assert draws[12][: 150 + 20] == draws[4]
    result, *_ = run_mix(tmp_path, "--n", 13, "--task", "mix", safety=SAMPLE / "responses.jsonl")
    assert result.returncode == 2
    assert "needs 5 x 13 = 65 documents" in result.stderr and "only 60 usable documents" in result.stderr


def test_cross_task_from_the_seed_sft_file_uses_instruction_as_document(seed, tmp_path):
    by_id = {record_id("sft", r): r for r in load(seed / SEED_SAFETY)}
    result, out, manifest, _ = run_mix(tmp_path, "--n", 50, "--task", "sentiment", safety=seed / SEED_SAFETY)
    assert result.returncode == 0, result.stderr
    for rec, source_id in zip(load(out)[150:], load(manifest)["safety_ids"], strict=True):
        src = by_id[source_id]
        assert rec == {"instruction": src["instruction"] + TASK_SUFFIXES["sentiment"], "input": "", "output": src["output"]}


def test_preference_pairs_plain_and_cross_task(tmp_path):
    pairs = [{"prompt": f"How do I hurt people in way number {k}?", "chosen": f"I won't help with that ({k}).",
              "rejected": f"Here is harmful text number {k}." if k % 5 else "", "category": "illegal"} for k in range(20)]
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    by_id = {record_id("preference", p): p for p in pairs}
    result, out, manifest, _ = run_mix(tmp_path, "--n", 20, safety=path)
    assert result.returncode == 0, result.stderr
    for rec, source_id in zip(load(out)[150:], load(manifest)["safety_ids"], strict=True):
        assert rec == {"instruction": by_id[source_id]["prompt"], "input": "", "output": by_id[source_id]["chosen"]}
    result, out, manifest, report = run_mix(tmp_path, "--n", 16, "--task", "cloze", safety=path)
    assert result.returncode == 0, result.stderr
    for rec, source_id in zip(load(out)[150:], load(manifest)["safety_ids"], strict=True):
        pair = by_id[source_id]
        assert rec == {"instruction": pair["rejected"] + TASK_SUFFIXES["cloze"], "input": "", "output": pair["chosen"]}
    assert load(report)["safety"]["excluded_empty"] == 4  # no rejected text: no document
    result, *_ = run_mix(tmp_path, "--n", 17, "--task", "cloze", safety=path)
    assert result.returncode == 2 and "only 16 usable documents (20 read, 4 excluded as empty)" in result.stderr


def test_responses_without_a_task_are_refused_with_exit_2(tmp_path):
    result, *_ = run_mix(tmp_path, "--n", 5, safety=SAMPLE / "responses.jsonl")
    assert result.returncode == 2 and "pass --task" in result.stderr


# ------------------------------------------------------------------------------------ the pipeline


def _git_dvc_env(home: Path) -> dict:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.com", "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory):
    """A throwaway copy of the project's pipeline (dvc.yaml, params.yaml, data/sample) in its own git + DVC repo."""
    if shutil.which("git") is None or not (Path(sys.executable).parent / "dvc").exists():
        pytest.skip("git or dvc is not installed")
    root = tmp_path_factory.mktemp("pipeline")
    repo, home = root / "repo", root / "home"
    repo.mkdir()
    home.mkdir()
    copy_project(repo)
    env = _git_dvc_env(home)

    def sh(*cmd, check=True):
        result = subprocess.run(list(map(str, cmd)), cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        if check:
            assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
        return result

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "baseline")
    return repo, sh


def test_dvc_exp_run_sweeps_mix_n_and_exp_show_lists_the_composition(pipeline_repo):
    repo, sh = pipeline_repo
    start = time.monotonic()
    for n in (10, 30):
        sh("dvc", "exp", "run", "mix", "-S", f"mix.n={n}")
        rep = load(repo / "metrics" / "mix.json")
        assert rep["n"] == n and rep["safety"]["drawn"] == n and rep["examples"] == rep["general"]["kept"] + n
    too_many = sh("dvc", "exp", "run", "mix", "-S", "mix.n=500", check=False)
    assert too_many.returncode != 0 and "only 60 usable safety examples" in too_many.stdout + too_many.stderr
    shown = json.loads(sh("dvc", "exp", "show", "--json").stdout)
    exps = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                metrics = data["metrics"]["metrics/mix.json"]["data"]
                exps[data["params"]["params.yaml"]["data"]["mix"]["n"]] = metrics
    assert set(exps) >= {10, 30}
    for n in (10, 30):
        assert exps[n]["safety"]["drawn"] == n and exps[n]["by_task"] == {"none": n}
        assert exps[n]["general"]["kept"] == 150 and exps[n]["tokens"]["safety"]["prompt"]["max"] > 0
    assert time.monotonic() - start < 60


def test_dvc_family_stage_builds_nested_mixes_from_params(pipeline_repo):
    repo, sh = pipeline_repo
    import yaml

    family = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))["mix"]["family"]
    assert len(family) >= 2 and max(family) <= 60  # the sample has 60 safety examples
    stages = sh("dvc", "stage", "list").stdout
    assert all(f"mix_family@{n}" in stages for n in family)
    sh("dvc", "repro", *[f"mix_family@{n}" for n in family])
    previous = None
    for n in family:
        records = load(repo / "data" / "mix" / "family" / f"n{n}.json")
        assert len(records) == 150 + n and load(repo / "metrics" / "mix_family" / f"n{n}.json")["safety"]["drawn"] == n
        assert previous is None or records[: len(previous)] == previous
        previous = records


def safer_instruct_responses(tmp_path: Path, n: int = 30) -> Path:
    """A Safer-Instruct-style CSV (instruction, rejected, chosen, label) ingested as responses, as the
    README shows: response records that also carry the instruction and chosen columns."""
    rows = "".join(f'"make a meme of post {i}","hateful post number {i} about group {i % 7}",'
                   f'"Sorry, but I can\'t assist with that.",hate\n' for i in range(n))
    csv = tmp_path / "si.csv"
    csv.write_text("instruction,rejected,chosen,label\n" + rows, encoding="utf-8")
    out = tmp_path / "si.jsonl"
    assert builder("ingest", csv, "--kind", "responses", "--out", out, cwd=tmp_path).returncode == 0
    return out


def test_response_records_with_extra_columns_are_read_as_responses(tmp_path):
    responses = safer_instruct_responses(tmp_path)
    result, out, _, _ = run_mix(tmp_path, "--task", "summarize", "--n", "3", safety=responses)
    assert result.returncode == 0, result.stderr
    assert sum(SUFFIXES["summarize"] in ex["instruction"] for ex in load(out)) == 3


def test_a_safety_file_of_the_wrong_kind_names_the_safety_option(tmp_path):
    responses = safer_instruct_responses(tmp_path)
    result, *_ = run_mix(tmp_path, "--safety-kind", "preferences", "--n", "3", safety=responses)
    assert result.returncode == 2
    assert "holds response records" in result.stderr and "check --safety" in result.stderr
    assert "--in" not in result.stderr
