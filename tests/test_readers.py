"""Hostile input never sinks a file: each bad record is quarantined with FILE:WHERE: field and good +
bad = read; file-level problems and unusable outputs exit 2 (or 1 for a full disk) with one clear line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import pytest

from builder.errors import BadInput, Problem, escape
from builder.records import atomic_outputs, atomic_path, remove_stale_temps, write_records
from builder.validate import check
from tests.conftest import builder

GOOD = [{"prompt": f"question {n} about topic {n * 7}", "chosen": "I can't help with that.",
         "rejected": f"sure, step {n}", "category": "hate"} for n in range(1, 4)]
GOOD_LINES = [json.dumps(r) for r in GOOD]
DEEP = "[" * 100_000 + "]" * 100_000


def sorted_out(path, kind="preferences"):
    result = check(str(path), kind, semantic=False)
    assert len(result.good) + len(result.bad) == result.read
    return result


@pytest.mark.parametrize("bad_line,message", [
    ('{"prompt": "deep", "chosen": "a", "rejected": "b", "meta": {"x": ' + DEEP + '}}', "nested too deeply"),
    ('{"prompt": "big", "chosen": "a", "rejected": "b", "meta": {"n": ' + "9" * 5000 + '}}', "huge numbers"),
    ('{"prompt": "lone \\ud800 half", "chosen": "a", "rejected": "b"}', "without its pair"),
    ('{"prompt": "nan", "chosen": "a", "rejected": "b", "meta": {"score": NaN}}', "NaN is not a number"),
    ('{"prompt": "inf", "chosen": "a", "rejected": "b", "meta": {"score": -Infinity}}', "-Infinity is not a number"),
    ('{"prompt": "twice", "prompt": "again", "chosen": "a", "rejected": "b"}', "duplicate key(s) 'prompt'"),
])
def test_jsonl_bad_record_is_quarantined_alone(tmp_path, bad_line, message):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([GOOD_LINES[0], bad_line, *GOOD_LINES[1:]]) + "\n", encoding="utf-8")
    result = sorted_out(path)
    assert [r["prompt"] for r in result.good] == [r["prompt"] for r in GOOD]
    assert len(result.bad) == 1
    assert result.problems[0].where == "2" and result.problems[0].field == "line"
    assert message in result.problems[0].message
    write_records(tmp_path / "bad.jsonl", result.bad)  # the quarantine file itself can be written


@pytest.mark.parametrize("bad_record,message", [
    ('{"prompt": "deep", "chosen": "a", "rejected": "b", "meta": {"x": ' + DEEP + '}}', "unreadable value"),
    ('{"prompt": "big", "chosen": "a", "rejected": "b", "meta": {"n": ' + "9" * 5000 + '}}', "unreadable value"),
    ('{"prompt": "lone \\ud800 half", "chosen": "a", "rejected": "b"}', "without its pair"),
    ('{"prompt": "nan", "chosen": "a", "rejected": "b", "meta": {"score": NaN}}', "NaN is not a number"),
    ('{"prompt": "twice", "prompt": "again", "chosen": "a", "rejected": "b"}', "duplicate key(s) 'prompt'"),
])
def test_json_list_bad_record_is_quarantined_alone(tmp_path, bad_record, message):
    path = tmp_path / "in.json"
    path.write_text("[\n" + ",\n".join([GOOD_LINES[0], bad_record, *GOOD_LINES[1:]]) + "\n]\n", encoding="utf-8")
    result = sorted_out(path)
    assert [r["prompt"] for r in result.good] == [r["prompt"] for r in GOOD]
    assert [(p.where, p.field) for p in result.problems] == [("record 2", "record")]
    assert message in result.problems[0].message


def csv_file(tmp_path, meta_cell: str, header="instruction,rejected,chosen,label,meta"):
    path = tmp_path / "in.csv"
    rows = [header] + [f'"{r["prompt"]}",x,y,hate,' for r in GOOD[:1]] + [f'bad one,x,y,hate,"{meta_cell}"'] \
        + [f'"{r["prompt"]}",x,y,hate,' for r in GOOD[1:]]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("meta_cell,message", [
    ("{not json", "invalid JSON"),
    ('{""x"": ' + DEEP.replace('"', '""') + "}", "nested too deeply"),
    ('{""a"": 1, ""a"": 2}', "duplicate key(s) 'a'"),
])
def test_csv_meta_cell_that_is_not_json_is_quarantined(tmp_path, meta_cell, message):
    result = sorted_out(csv_file(tmp_path, meta_cell))
    assert len(result.good) == 3 and len(result.bad) == 1
    assert (result.problems[0].where, result.problems[0].field) == ("3", "meta")
    assert message in result.problems[0].message


def test_csv_duplicate_header_exits_2_naming_it(tmp_path):
    path = csv_file(tmp_path, "", header="instruction,rejected,chosen,rejected,meta")
    with pytest.raises(BadInput, match=r"duplicate column\(s\) 'rejected'"):
        sorted_out(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_utf8_bom_is_read(tmp_path, suffix):
    path = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        text = "\n".join(GOOD_LINES) + "\n"
    elif suffix == ".json":
        text = json.dumps(GOOD)
    else:
        text = "instruction,rejected,chosen,label\n" + "".join(f'"{r["prompt"]}",x,y,hate\n' for r in GOOD)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    result = sorted_out(path)
    assert [r["prompt"] for r in result.good] == [r["prompt"] for r in GOOD] and not result.bad


def test_parquet_nan_is_quarantined_with_its_row(tmp_path):
    import polars as pl

    path = tmp_path / "in.parquet"
    pl.DataFrame({"prompt": ["a b", "c d"], "chosen": ["x", "x"], "rejected": ["y", "y"],
                  "score": [1.0, float("nan")]}).write_parquet(path)
    result = sorted_out(path)
    assert len(result.good) == 1 and [(p.where, p.field) for p in result.problems] == [("row 2", "score")]


def test_nan_is_never_written(tmp_path):
    with pytest.raises(ValueError):
        write_records(tmp_path / "x.jsonl", [{"a": float("nan")}])
    assert not list(tmp_path.iterdir())  # the temp file went too


def test_messages_escape_control_characters():
    assert escape("col\x1b[31m\x07") == "col\\x1b[31m\\x07"
    assert str(Problem("f.csv", "2", "na\x1bme", "bad\rvalue")) == "f.csv:2: na\\x1bme: bad\\x0dvalue"
    assert str(BadInput("first\nsecond \x1b")) == "first\nsecond \\x1b"


# ---------------------------------------------------------------------------- file level, via the CLI


def assert_one_line_exit(result, code, *words):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_file_level_errors_exit_2(tmp_path):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet at all")
    assert_one_line_exit(builder("validate", corrupt, "--kind", "preferences"), 2, "not a readable parquet file")
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    assert_one_line_exit(builder("validate", folder, "--kind", "preferences"), 2, "is a folder")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    assert_one_line_exit(builder("validate", fifo, "--kind", "preferences"), 2, "not a regular file")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.jsonl"
        locked.write_text(GOOD_LINES[0] + "\n")
        locked.chmod(0)
        assert_one_line_exit(builder("validate", locked, "--kind", "preferences"), 2, "cannot read it")


def test_outputs_must_be_distinct_and_not_a_folder(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(GOOD_LINES) + "\n")
    same = tmp_path / "same.jsonl"
    assert_one_line_exit(builder("validate", src, "--kind", "preferences", "--out", same, "--rejects", same),
                         2, "--out and --rejects are both")
    assert_one_line_exit(builder("ingest", src, "--kind", "preferences", "--out", tmp_path), 2, "is a folder")


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_exits_1_and_leaves_nothing(tmp_path, tiny_disk):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({**GOOD[0], "prompt": f"q {n} " + "x" * 200}) for n in range(2000)) + "\n")
    out = tiny_disk / "out.jsonl"
    assert_one_line_exit(builder("ingest", src, "--kind", "preferences", "--out", out), 1, "disk is full")
    assert not list(tiny_disk.iterdir())


# ---------------------------------------------------------------------------------------- writing


def test_outputs_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_records(tmp_path / "a.jsonl", GOOD)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.jsonl").stat().st_mode) == 0o644


def test_atomic_outputs_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.json"
    with pytest.raises(RuntimeError):
        with atomic_outputs(out=a, report=b):
            write_records(a, GOOD)
            assert not a.exists()  # written to its temp only, waiting for the others
            raise RuntimeError("the second output failed")
    assert not list(tmp_path.iterdir())
    with atomic_outputs(out=a, report=b):
        write_records(a, GOOD)
        with atomic_path(b) as tmp:
            tmp.write_text("{}")
        assert not a.exists()
    assert a.exists() and b.exists() and len(list(tmp_path.iterdir())) == 2
    with pytest.raises(BadInput, match="--out and --report are both"):
        with atomic_outputs(out=a, report=tmp_path / "." / "a.jsonl"):
            pass


def test_stale_temps_are_cleaned_only_when_ours_and_dead_or_old(tmp_path):
    target = tmp_path / "out.jsonl"
    child = subprocess.Popen(["true"])
    child.wait()
    stale_dead = tmp_path / f".out.jsonl.{child.pid}.abc123.tmp"
    live_new = tmp_path / f".out.jsonl.{os.getppid()}.def456.tmp"
    live_old = tmp_path / f".out.jsonl.{os.getppid()}.ghi789.tmp"
    not_ours = tmp_path / ".out.jsonl.backup.tmp"
    other = tmp_path / f".other.jsonl.{child.pid}.abc123.tmp"
    for p in (stale_dead, live_new, live_old, not_ours, other):
        p.write_text("x")
    hour_ago = time.time() - 3600
    os.utime(live_old, (hour_ago, hour_ago))
    assert sorted(remove_stale_temps(target)) == sorted([stale_dead, live_old])
    assert live_new.exists() and not_ours.exists() and other.exists()
