"""Load time of a full-size tracks.csv (106,574 rows, FMA's real 3-row header), cold and cached.

    python benchmarks/metadata.py [--rows 106574] [--sample path/to/real/tracks.csv]

The file is made by repeating the rows of a real tracks.csv excerpt with new track ids, so it has
the real columns, quoting and embedded newlines. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from genretag.data import fma

# FMA's 3-row header, then a row shaped like the real file's first record (quotes, commas, newlines).
HEADER = [
    "," + ",".join(top for top, _ in fma.TRACKS_CSV_COLUMNS),
    "," + ",".join(sub for _, sub in fma.TRACKS_CSV_COLUMNS),
    "track_id" + "," * len(fma.TRACKS_CSV_COLUMNS),
]
ROW = (
    '0,2008-11-26 01:44:45,2009-01-05 00:00:00,,4,1,<p></p>,6073,,[],"AWOL - A Way Of Life, ""Vol. 1""",7,Album,'
    '2006-01-01 00:00:00,,,"<p>A Way Of Life,\nA Collective of Hip-Hop from NJ{filler}</p>",0,2008-11-26 01:42:32,9,1,'
    "40.0583238,New Jersey,-74.4056612,\"Sajje Morocco,Brownbum\",AWOL,,['awol'],http://example.org,,"
    "{split},{subset},256000,0,,2008-11-26 01:48:12,2008-11-26 00:00:00,168,2,{top},{genres},{genres_all},,4656,en,"
    "Attribution-NonCommercial-ShareAlike 3.0 International,1293,,3,,[],Food"
)
# Pads each row to ~900 bytes, the mean record size of the real file's first records.
FILLER = " ..." * 110


def write_tracks_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A tracks.csv of ``rows`` rows with the real header, columns, quoting and newlines."""
    rng = np.random.default_rng(seed)
    choices = [
        ("Hip-Hop", "[21]", "[21]"),
        ("", '"[76, 103]"', '"[17, 103, 76]"'),
        ("Rock", "[12]", "[12]"),
    ]
    splits = rng.choice(["training", "validation", "test"], rows, p=[0.8, 0.1, 0.1])
    subsets = rng.choice(["small", "medium", "large"], rows, p=[0.08, 0.17, 0.75])
    buf = io.StringIO()
    buf.write("\n".join(HEADER) + "\n")
    for i in range(rows):
        top, genres, genres_all = choices[i % 3]
        buf.write(f"{i + 2},")
        buf.write(
            ROW.format(
                filler=FILLER,
                split=splits[i],
                subset=subsets[i],
                top=top,
                genres=genres,
                genres_all=genres_all,
            )
        )
        buf.write("\n")
    path.write_text(buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=106_574)
    parser.add_argument("--quick", action="store_true", help="2,000 rows (a CI smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.rows = 2_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tracks.csv"
        write_tracks_csv(path, args.rows)
        start = time.perf_counter()
        cold = fma.read_tracks(tmp)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = fma.read_tracks(tmp)
        warm_s = time.perf_counter() - start
        assert len(cold) == len(warm) == args.rows
        result = {
            "benchmark": "metadata",
            "quick": args.quick,
            "rows": args.rows,
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "cold_s": round(cold_s, 3),
            "cached_s": round(warm_s, 3),
            "targets": {"cold_s": 5.0, "cached_s": 1.0},
        }
    print(json.dumps(result))
    print(f"# tracks.csv {args.rows} rows: cold {cold_s:.2f} s, cached {warm_s:.3f} s", flush=True)


if __name__ == "__main__":
    csv.field_size_limit(1 << 30)
    main()
