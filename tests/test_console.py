"""builder.console: every terminal message escaped on stderr, progress bars only on a terminal."""

from __future__ import annotations

import io
import subprocess
import sys

from builder import console
from tests.conftest import builder, write_jsonl


def test_a_command_prints_a_hostile_file_name_escaped_on_stderr(tmp_path):
    # ESC[31m in a file name would turn the user's terminal red; the summary names the file.
    source = write_jsonl(tmp_path / "in\x1b[31m.jsonl", [{"instruction": "hi", "output": "hello"}])
    result = builder("validate", source, "--kind", "sft", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "in\\x1b[31m.jsonl: 1 read as sft, 1 good, 0 quarantined" in result.stderr
    assert "\x1b" not in result.stderr and result.stdout == ""
    assert "reading" not in result.stderr  # stderr is a pipe here: no progress bar


def test_messages_go_to_stderr_with_their_prefix(capsys):
    console.info("one\ntwo\x07")
    console.warning("careful")
    console.error("broken")
    out, err = capsys.readouterr()
    assert out == "" and err == "one\ntwo\\x07\nwarning: careful\nerror: broken\n"


def test_progress_is_silent_when_stderr_is_not_a_terminal(capsys):
    assert list(console.progress(iter(range(3)), "reading x")) == [0, 1, 2]
    assert capsys.readouterr() == ("", "")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_with_an_escaped_description(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(console.progress([1, 2], "reading a\x1b[2Jb")) == [1, 2]
    drawn = terminal.getvalue()
    assert "reading a\\x1b[2Jb" in drawn and "2/2" in drawn and "\x1b[2J" not in drawn


def test_importing_the_console_loads_no_progress_library():
    probe = "import sys, builder.console, builder.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('tqdm', 'rich')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
