"""``genretag similar``: each file's nearest neighbours by sound, and "more like this" playlists.

    genretag tag ~/Music --ckpt best.ckpt --out tags.csv --embeddings
    genretag similar tags.csv                           # -> tags.similar.csv
    genretag similar tags.csv -n 20 --playlists ~/Music/Playlists --seed ~/Music/a/01.flac

Reads the table and its embeddings (``<stem>.embeddings.npy``, row i = the table's row i; see
genretag.tagger.embeddings) and finds each file's ``-n`` nearest neighbours by cosine
similarity (scikit-learn's NearestNeighbors, brute force: exact, and fast enough for a library
of some 100k files). Writes one row per (file, neighbour): ``path, rank, neighbour,
similarity`` as CSV, or Parquet when ``--out`` ends in ``.parquet``.

``--playlists DIR`` writes ``.m3u8`` playlists as genretag.playlists writes the genre ones
(paths relative to DIR): one per ``--seed`` file ("More like <name>": the seed, then its
neighbours, most similar first), or, without seeds, one per top genre ("More like <genre>":
the ``--typical`` files nearest the genre's mean embedding, each followed by its neighbours).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from genretag.errors import CommandParser, ConfigError, run_command

log = logging.getLogger(__name__)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows (N, D) scaled to length 1 (all-zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def neighbours(embeddings: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(index (N, k), cosine similarity (N, k)) of each row's k = min(n, N - 1) nearest other
    rows, most similar first."""
    from sklearn.neighbors import NearestNeighbors

    k = min(n, len(embeddings) - 1)
    if k < 1:
        return np.zeros((len(embeddings), 0), int), np.zeros((len(embeddings), 0))
    search = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute")
    distance, index = search.fit(embeddings).kneighbors(embeddings)
    keep = np.zeros_like(index, dtype=bool)  # each row without itself (a duplicate may come first)
    for row in range(len(index)):
        others = np.flatnonzero(index[row] != row)[:k]
        keep[row, others] = True
    shape = (len(index), k)
    return index[keep].reshape(shape), 1.0 - distance[keep].reshape(shape)


def load(table: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(files, embeddings) of the rows of ``table`` that have an embedding."""
    from genretag.report import read_table
    from genretag.tagger.embeddings import read_embeddings

    files, _ = read_table(table)
    matrix = read_embeddings(table, len(files))
    ok = ~np.isnan(matrix).any(axis=1)
    if not ok.any():
        raise ConfigError(f"{table}: no file has an embedding; tag with --embeddings")
    if not ok.all():
        log.warning("%d of %d files have no embedding; left out", int((~ok).sum()), len(ok))
    return files[ok].reset_index(drop=True), matrix[ok]


def neighbour_table(files: pd.DataFrame, index: np.ndarray, similarity: np.ndarray) -> pd.DataFrame:
    paths = files["path"].to_numpy()
    n, k = index.shape
    return pd.DataFrame(
        {
            "path": np.repeat(paths, k),
            "rank": np.tile(np.arange(1, k + 1), n),
            "neighbour": paths[index.reshape(-1)],
            "similarity": np.round(similarity.reshape(-1), 5),
        }
    )


def typical(files: pd.DataFrame, embeddings: np.ndarray, per_genre: int) -> dict[str, list[int]]:
    """{top genre: the rows of its ``per_genre`` files nearest its mean direction}."""
    unit = unit_rows(embeddings)
    found = {}
    for genre, rows in files.groupby("top1", sort=True).indices.items():
        centre = unit_rows(unit[rows].mean(0, keepdims=True))[0]
        order = np.argsort(-(unit[rows] @ centre), kind="stable")
        found[str(genre)] = [int(rows[i]) for i in order[:per_genre]]
    return found


def playlists(
    files: pd.DataFrame,
    index: np.ndarray,
    seeds: dict[str, list[int]],
    folder: Path,
) -> dict[str, Path]:
    """One playlist per ``seeds`` entry (name: seed rows), each seed then its neighbours."""
    from genretag.playlists import write_playlists
    from genretag.tagger.scan import real_path

    rows = []
    for name, members in seeds.items():
        for seed in members:
            for row in [seed, *index[seed]]:
                rows.append((real_path(files["path"][row]), [name]))
    return write_playlists(rows, folder)


def _seed_rows(files: pd.DataFrame, seeds: list[str]) -> dict[str, list[int]]:
    """{"More like <stem>": [row]} for each --seed (matched as written, or as the same file)."""
    from genretag.tagger.scan import real_path

    resolved = {str(real_path(p).resolve()): i for i, p in enumerate(files["path"])}
    found = {}
    for seed in seeds:
        row = resolved.get(str(Path(seed).expanduser().resolve()))
        if row is None:
            raise ConfigError(f"--seed {seed}: not in the table (or it has no embedding)")
        found[f"More like {Path(seed).stem}"] = [row]
    return found


# -- the command ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="genretag similar",
        description="Nearest neighbours by sound from a tag table's embeddings; playlists.",
        epilog="The table needs embeddings: genretag tag ... --out tags.csv --embeddings",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("table", type=Path, help="the --out of genretag tag --embeddings (.csv or .jsonl)")
    add("-n", "--neighbours", type=int, default=10, metavar="N", help="per file (10)")
    add("--out", type=Path, metavar="FILE", help="default <stem>.similar.csv; .parquet works")
    add("--playlists", type=Path, metavar="DIR", help="write 'more like this' .m3u8 playlists")
    add("--seed", action="append", default=[], metavar="FILE", help="a playlist seed (repeat)")
    add("--typical", type=int, default=3, metavar="K",
        help="without --seed: each genre's K most typical files seed its playlist (3)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``genretag similar ...``: 0 when written, 2 on a usage error or a table without embeddings."""
    return run_command("similar", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    for name, value in [("--neighbours", args.neighbours), ("--typical", args.typical)]:
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if args.seed and not args.playlists:
        raise ConfigError("--seed chooses playlist seeds; add --playlists DIR")
    out = args.out or args.table.with_name(args.table.stem + ".similar.csv")
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: use a .csv or a .parquet file name")
    files, embeddings = load(args.table)
    index, similarity = neighbours(embeddings, args.neighbours)
    found = neighbour_table(files, index, similarity)
    from genretag.io import atomic_write

    if out.suffix.lower() == ".parquet":
        atomic_write(out, lambda handle: found.to_parquet(handle, index=False))
    else:
        atomic_write(out, found.to_csv(index=False, lineterminator="\n"))
    print(f"wrote {out} ({len(files)} files, {index.shape[1]} neighbours each)")
    if args.playlists:
        seeds = (
            _seed_rows(files, args.seed)
            if args.seed
            else {
                f"More like {g}": rows
                for g, rows in typical(files, embeddings, args.typical).items()
            }
        )
        written = playlists(files, index, seeds, args.playlists)
        print(f"wrote {len(written)} playlists to {args.playlists}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
