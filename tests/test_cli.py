"""CLI habits: help without heavy imports, --version, exit codes for bad usage."""

from __future__ import annotations

import subprocess
import sys

from builder import __version__
from tests.conftest import builder

HEAVY = ("torch", "transformers", "datasets", "openai", "peft", "trl", "polars", "jsonschema", "dvc")


def test_help_imports_nothing_heavy():
    probe = ("import sys; sys.argv=['builder','--help']\nfrom builder.cli import app\ntry: app()\nexcept SystemExit: pass\n"
             f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "Commands" in out and out.rsplit("HEAVY:", 1)[1].strip() == ""


def test_version_and_every_command_has_help_with_an_example():
    assert builder("--version").stdout.strip() == f"builder {__version__}"
    listing = builder("--help").stdout
    names = [l.split()[0] for l in listing.split("Commands:")[1].splitlines() if l.startswith("  ") and l.split()]
    assert {"ingest", "validate"} <= set(names)
    for name in [*names, "cache stats", "cache prune", "cache model"]:
        result = builder(*name.split(), "--help")
        assert result.returncode == 0 and "Example" in result.stdout, name
        options = result.stdout.split("Options:")[-1]
        assert "list[" not in options and "<list" not in options, name  # a metavar, not a Python type


def test_missing_required_option_is_exit_2():
    result = builder("ingest", "x.jsonl")
    assert result.returncode == 2 and "--kind" in result.stderr


def test_a_stage_given_another_stages_records_says_so(tmp_path):
    from tests.conftest import write_jsonl

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    result = builder("respond", "--in", pairs, "--out", tmp_path / "o.jsonl", "--max-new-tokens", "8", cwd=tmp_path)
    assert result.returncode == 2
    assert "holds preference records, but this step needs instruction records" in result.stderr


def test_show_an_unknown_id_is_exit_2(tmp_path):
    result = builder("show", "0123456789abcdef", "--in", tmp_path, cwd=tmp_path)
    assert result.returncode == 2 and "not found" in result.stdout
