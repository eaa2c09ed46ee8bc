"""`builder diff` on 1 M records against 1 M (goal: seconds): prints the wall time of the comparison.

Two pairs-like parquet datasets (train/test splits, meta.source provenance) where the new version has
1 % of records changed (same source, new `chosen`), 0.5 % removed and 0.5 % added.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000


def write_version(root: Path, frame) -> Path:
    import polars as pl
    for split, part in (("train_prefs", frame.filter(pl.col("n") % 10 != 0)), ("test_prefs", frame.filter(pl.col("n") % 10 == 0))):
        (root / "data").mkdir(parents=True, exist_ok=True)
        part.drop("n").write_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def main() -> None:
    import polars as pl

    from builder.publish.diff import compare, frame_of, Side
    n = pl.int_range(0, N, eager=True).alias("n")
    base = pl.DataFrame(n).with_columns(
        ("Tell me something mean about neighbour " + pl.col("n").cast(pl.String)).alias("prompt"),
        pl.lit("I'd rather not insult anyone, but I can help you talk calmly.").alias("chosen"),
        ("Neighbour " + pl.col("n").cast(pl.String) + " is an idiot.").alias("rejected"),
        pl.when(pl.col("n") % 2 == 0).then(pl.lit("hate")).otherwise(pl.lit("illegal")).alias("category"),
        ('{"source": "seed-data/x.csv:' + pl.col("n").cast(pl.String) + '", "respond": {"parents": []}}').alias("meta"),
        ("id" + pl.col("n").cast(pl.String)).alias("id"),
    )
    changed = pl.col("n") % 100 == 1
    new = base.filter(pl.col("n") % 200 != 3).with_columns(
        pl.when(changed).then(pl.lit("No. Let's talk about something kinder.")).otherwise(pl.col("chosen")).alias("chosen"),
        pl.when(changed).then("new" + pl.col("id")).otherwise(pl.col("id")).alias("id"))
    added = base.head(N // 200).with_columns((pl.col("n") + N).alias("n"), ("added" + pl.col("id")).alias("id"),
                                           ("New prompt " + pl.col("n").cast(pl.String)).alias("prompt"),
                                           ('{"source": "seed-data/y.csv:' + pl.col("n").cast(pl.String) + '"}').alias("meta"))
    with tempfile.TemporaryDirectory() as tmp:
        old_dir = write_version(Path(tmp) / "old", base)
        new_dir = write_version(Path(tmp) / "new", pl.concat([new, added]))
        start = time.perf_counter()
        report = compare(Side("old", frame_of(old_dir)), Side("new", frame_of(new_dir)))
        seconds = time.perf_counter() - start
    c = report["counts"]
    print(f"builder diff {N:,} vs {c['new']:,} records: {seconds:.2f} s "
          f"(+{c['added']} -{c['removed']} ~{c['changed']}, {c['unchanged']:,} unchanged)")


if __name__ == "__main__":
    main()
