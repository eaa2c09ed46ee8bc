"""validate's two speed-ups give exactly what the plain path gives: the orjson fast path of the JSON
Lines reader (duplicate keys, huge integers, floats, escapes) and worker processes for big files."""

from __future__ import annotations

import json

import pytest

import builder
from builder import validate
from builder.records import Unreadable, jsonl_rows, parse_json
from builder.validate import check, check_chunks

TRICKY = [
    '{"a":1,"b":2,"a" :3}',  # a repeated key hidden behind a space before its colon
    '{"a":1,"a":":"}',  # a value that starts with a colon
    '{"a":"\\"","a":2}',  # an escaped quote
    '{"a":{"x":1,"x":2}}',  # repeated in a nested object
    '{"a":[{"x":1},{"x":1,"x":2}]}',
    '{"a":"\\":","b":1,"b":2}',
    '{"n":123456789012345678901234567890}',  # orjson would make this a float
    '{"f":1.5e300,"g":-0.0,"h":[1.0,2]}',
    '{"f":1e400}',
    '{"s":"\\u00e9\\ud83d\\ude00 caf\u00e9"}',
    '{"s":"\\ud800"}',
    '{"a":NaN}',
    '[1,2]',
    '"text"',
    '{}',
    '  {"a" : 1}  ',
    '{"a":1}{"b":2}',
    '{"k":"ends in a backslash\\\\"}',
    '{"prompt": "twice", "prompt": "again"}',
    '{"<|im_start|>system":"x","\\u001b[2J":1}',
]


@pytest.mark.parametrize("line", TRICKY)
def test_fast_path_agrees_with_the_exact_parser(line):
    [row] = list(jsonl_rows([line.encode("utf-8") + b"\n"], 2))
    assert row.where == "2"
    try:
        expected = parse_json(line)
    except Unreadable as e:
        assert row.data is None and str(e) in row.problems[0][1]
        return
    if not isinstance(expected, dict):
        assert row.data is None
        return
    assert repr(row.data) == repr(expected)  # same values and the same types (int stays int)


def lines_with_every_problem() -> list[str]:
    good = [{"prompt": f"question {n} on topic {n * 3}", "chosen": "I can't help with that.",
             "rejected": f"sure, step {n}", "category": "hate"} for n in range(40)]
    lines = [json.dumps(r) for r in good]
    lines[0] = "\ufeff" + lines[0]  # a BOM on line 1
    lines[5] = lines[5][:30]  # truncated
    lines[9] = json.dumps(good[3])  # exact duplicate
    lines[12] = json.dumps({**good[4], "prompt": good[4]["prompt"].upper() + "!"})  # near duplicate
    lines[15] = '{"prompt": "twice", "prompt": "again", "chosen": "a", "rejected": "b"}'
    lines[18] = ""  # blank lines are skipped, not counted
    lines[21] = json.dumps({**good[21], "chosen": good[21]["rejected"]})
    lines[24] = json.dumps({**good[24], "meta": {"score": 0.25, "n": 10 ** 30}})
    lines[27] = '{"prompt": "nan", "chosen": "a", "rejected": "b", "meta": {"score": NaN}}'
    return lines


def test_workers_give_the_same_result_as_one_process(tmp_path, monkeypatch):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines_with_every_problem()) + "\n", encoding="utf-8")
    monkeypatch.setattr(validate, "CHUNK", 7)  # many blocks, duplicates across them
    runs = {}
    for workers in (1, 2):
        chunks = list(check_chunks(str(path), "preferences", workers=workers))
        bad = sorted((r for c in chunks for r in c.bad), key=lambda r: int(r["where"].rsplit(":", 1)[1]))
        runs[workers] = ([r for c in chunks for r in c.good], bad,
                         sum(c.read for c in chunks), chunks[-1].stats)
    assert runs[1] == runs[2]
    good, bad, read, stats = runs[2]
    assert read == 39 == len(good) + len(bad)
    assert {b["where"].rsplit(":", 1)[1]: b["reason"] for b in bad} == {
        "6": "unparseable", "10": "duplicate", "13": "near-duplicate", "16": "unparseable",
        "22": "chosen-equals-rejected", "28": "unparseable"}
    assert good[-1]["meta"] == {} and [g for g in good if g["meta"]][0]["meta"]["n"] == 10 ** 30


def test_a_big_file_is_read_by_workers_with_the_same_result(tmp_path, monkeypatch):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines_with_every_problem()) + "\n", encoding="utf-8")
    serial = check(str(path), "preferences")
    monkeypatch.setattr(validate, "PARALLEL_FROM_BYTES", 0)
    assert validate._auto_workers(str(path)) == 1  # a library caller asks for workers explicitly
    monkeypatch.setattr(builder, "RUNNING_AS_CLI", True)  # what the CLI sets
    assert validate._auto_workers(str(path)) > 1 or __import__("os").cpu_count() == 1
    parallel = check(str(path), "preferences")
    in_order = lambda bad: sorted(bad, key=lambda r: int(r["where"].rsplit(":", 1)[1]))
    assert (parallel.good, in_order(parallel.bad), parallel.stats) == (serial.good, in_order(serial.bad), serial.stats)


def test_duplicates_are_found_across_runs_of_remembered_hashes(monkeypatch):
    import numpy as np

    from builder.validate import FirstSeen

    monkeypatch.setattr(FirstSeen, "RUN", 4)  # a new run every 4 hashes
    seen = FirstSeen()
    first = seen.earlier_rows(np.array([5, 1, 9, 5, 7], np.uint64), np.array([1, 2, 3, 4, 5]))
    assert first.tolist() == [-1, -1, -1, 1, -1]  # a repeat inside the batch names its first row
    later = seen.earlier_rows(np.array([2, 7, 3, 8], np.uint64), np.array([6, 7, 8, 9]))
    assert later.tolist() == [-1, 5, -1, -1]
    again = seen.earlier_rows(np.array([8, 5, 2, 4], np.uint64), np.array([10, 11, 12, 13]))
    assert again.tolist() == [9, 1, 6, -1]
    assert len(seen.runs) > 1 and sum(len(h) for h, _ in seen.runs) == 8


def test_a_full_temp_disk_under_the_duplicate_index_is_a_clear_failure(tmp_path, monkeypatch):
    import subprocess
    import tempfile

    import numpy as np

    from builder.errors import RunFailed
    from builder.validate import FirstSeen

    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(mount))
        monkeypatch.setattr(FirstSeen, "RUN", 4096)  # 48 KB per run: more than the disk holds
        seen = FirstSeen()
        with pytest.raises(RunFailed, match=f"cannot write the duplicate index to {mount}.*TMPDIR"):
            seen.earlier_rows(np.arange(5000, dtype=np.uint64), np.arange(5000))
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
