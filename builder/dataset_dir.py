"""Dataset folders builder writes (``pairs --out DIR``): built beside their destination and swapped in,
and never at the cost of a user's files.

A folder builder wrote carries a marker file (``.builder-dataset.json``). An existing ``--out`` folder is
replaced only when it is empty, carries the marker, or holds nothing but builder's own dataset layout
(folders written before the marker existed). It is never replaced when it is the working folder or one
of its parents, or when it holds one of the stage's inputs: each of those is bad usage (exit 2).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

from builder.errors import BadInput

MARKER = ".builder-dataset.json"
# What builder's own dataset folders hold (pairs): anything else in a folder without the marker is the user's.
OWN_LAYOUT = ("README.md", "pairs.jsonl", "data/*.parquet", "conversational/*.parquet", "csv/*.csv", MARKER)
STALE_AFTER_S = 3600  # a build folder this old belongs to a killed run


def check_out_dir(out: Path, inputs: list[str | Path], *, stage: str) -> Path:
    """The resolved destination, or BadInput saying why builder will not write there."""
    out = Path(out)
    target = out.resolve()
    if target.exists() and not target.is_dir():
        raise BadInput(f"--out {out}: is a file, but {stage} writes a dataset folder; give a folder path "
                       f"(e.g. --out {out.with_suffix('')})")
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise BadInput(f"--out {out}: is the working folder or one of its parents; {stage} replaces its --out "
                       "folder as a whole, so give a new folder (e.g. --out data/pairs)")
    for source in inputs:
        if "://" in str(source):
            continue
        path = Path(source).resolve()
        if path == target or target in path.parents:
            raise BadInput(f"--out {out}: holds {source}, which this run reads or writes; replacing the folder "
                           "would delete it. Write the dataset to another folder")
    if target.is_dir() and not replaceable(target):
        foreign = sorted(str(p.relative_to(target)) for p in _files(target) if not _own(p.relative_to(target)))
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise BadInput(f"--out {out}: exists and holds files builder did not write ({shown}); "
                       "give a new or empty folder, or move those files away")
    return target


def replaceable(folder: Path) -> bool:
    if (folder / MARKER).is_file():
        return True
    return all(_own(p.relative_to(folder)) for p in _files(folder))


@contextmanager
def building(out: Path, inputs: list[str | Path], *, stage: str):
    """Yield an empty build folder beside ``out``; on success it replaces ``out`` (with the marker)."""
    target = check_out_dir(out, inputs, stage=stage)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_builds(target)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    build.chmod(0o777 & ~umask)  # mkdtemp makes it private; the dataset is for teammates and servers too
    try:
        yield build
        (build / MARKER).write_text(json.dumps({"written_by": "builder", "stage": stage}) + "\n", encoding="utf-8")
        _swap_in(build, target)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _swap_in(build: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(build, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_stale_builds(target: Path) -> None:
    """Remove build folders of killed runs (only builder's own names, only when old)."""
    now = time.time()
    for pattern in (f".{target.name}.build-*", f".{target.name}.old-*", f".{target.name}.tmp"):
        for path in target.parent.glob(pattern):
            if path.is_dir() and (pattern.endswith(".tmp") or now - path.stat().st_mtime > STALE_AFTER_S):
                shutil.rmtree(path, ignore_errors=True)


def _files(folder: Path):
    return (p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _own(relative: Path) -> bool:
    return any(fnmatch(relative.as_posix(), pattern) for pattern in OWN_LAYOUT)
