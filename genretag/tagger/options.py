"""The ``genretag tag`` command line: its options and their checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from genretag.cluster import run as cluster
from genretag.errors import CommandParser, ConfigError
from genretag.system import PRECISIONS
from genretag.tagger import filetags

EXAMPLES = """examples:
  genretag tag ~/Music --ckpt best.ckpt --out tags.csv
  genretag tag ~/Music --ckpt best.ckpt --out tags.jsonl --top-k 3 --threshold 0.3
  genretag tag ~/Music --ckpt best.ckpt --out tags.csv --segments 1.0   # per-second timeline
  genretag tag ~/Music --ckpt best.ckpt --write-tags --dry-run          # preview, then without --dry-run
  genretag tag 'Music/**/*.flac' --ckpt a.ckpt --ckpt b.ckpt --ensemble geometric --out tags.csv
  genretag tag ~/Music --ckpt best.ckpt --out tags.csv --write-tags --watch   # then keep tagging
  genretag tag ~/Music --ckpt best.ckpt --out tags.csv --embeddings; genretag similar tags.csv
  genretag tag catalogue.txt --ckpt best.ckpt --out tags.parquet --engine ray [--address ADDR]

Re-running with the same --out continues an interrupted run. Exit code: 0 all files tagged,
1 some files failed (listed on stderr and in <out>.errors.csv), 2 a usage or checkpoint error.
"""


def _threshold(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a score in [0, 1] or auto") from None


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="genretag tag",
        description="Tag audio files with the genres a trained checkpoint predicts.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("inputs", nargs="+", metavar="PATH", help="audio files, folders (recursive) or globs")
    add("--ckpt", action="append", required=True, metavar="FILE",
        help="a checkpoint, or musicnn-msd / musicnn-mtt / musicnn-msd-vgg / musicnn-mtt-vgg "
        "(musicnn's published weights, converted from the installed musicnn package on first "
        "use); repeat for an ensemble")  # fmt: skip
    add("--out", type=Path, metavar="FILE", help="results table, .csv or .jsonl (resumable)")
    add("--top-k", type=int, default=3, metavar="K", help="genres listed/written per file (3)")
    add(
        "--threshold",
        type=_threshold,
        default=0.0,
        metavar="P|auto",
        help="least score to "
        "list/write; auto: each genre's threshold that maximised F1 on validation",
    )
    add("--aggregate", choices=("mean", "max"), default="mean", help="window -> track scores")
    add("--ensemble", choices=("arithmetic", "geometric"), default="arithmetic",
        help="how the probabilities of several --ckpt are averaged")  # fmt: skip
    add("--segments", type=float, metavar="S", help="timeline of window scores every S seconds")
    add("--hop", type=float, metavar="S", help="seconds between windows (default: one window)")
    add("--workers", type=int, metavar="N", help="processes that decode, and on the CPU also "
        "run the model (default: one per core; with a GPU all cores but one decode); 0: all "
        "in this process")  # fmt: skip
    add("--batch-size", type=int, metavar="N", help="windows per batch (8 on CPU, 64 on GPU)")
    add("--precision", choices=("auto", *PRECISIONS), default="auto",
        help="model arithmetic: auto (default: bf16 on CPUs with AMX or AVX-512 BF16, else "
        "fp32; musicnn's networks never bf16, and in ONNX Runtime when genretag[onnx] is "
        "installed), fp32, bf16, int8 (CPU: GRU and linear layers quantized), onnx (CPU: fp32 "
        "in ONNX Runtime, genretag[onnx])")  # fmt: skip
    add("--device", default="auto", help="auto (a GPU when present), cpu, cuda, cuda:1 ...")
    add("--write-tags", action="store_true", help="write the genres into the files' tags")
    add("--mode", choices=filetags.MODES, default="skip",
        help="for files that have a genre: keep it (skip), replace it, or add to it (merge)")  # fmt: skip
    add("--dry-run", action="store_true", help="with --write-tags: print the changes only")
    add(
        "--genre-map",
        type=Path,
        metavar="FILE",
        help="rename/merge/drop genres: a .yaml (rename:, drop:, keep:) or a label,genre .csv "
        "(default: the checkpoint's own map, if it has one: musicnn's keeps its genre tags)",
    )
    add(
        "--with-parents",
        action="store_true",
        help="write each genre's FMA parents before it "
        "(Electronic; Techno); they do not count against --max-genres",
    )
    add("--max-genres", type=int, metavar="N", help="genres chosen per file (default: --top-k)")
    add(
        "--min-score",
        type=float,
        metavar="P",
        help="least score to choose a genre (default: --threshold)",
    )
    add(
        "--report",
        type=Path,
        metavar="FILE.html",
        help="at the end, an HTML report of the whole --out table (needs genretag[report])",
    )
    add(
        "--playlists",
        type=Path,
        metavar="DIR",
        help="at the end, one .m3u8 playlist per "
        "chosen genre in DIR, paths relative to it (Navidrome, Jellyfin, mpd)",
    )
    add("--embeddings", action="store_true", help="keep each file's embedding (the trunk's "
        "pooled features, from the same pass) in <out>.embeddings.npy, for similar and the map")  # fmt: skip
    add("--watch", action="store_true", help="after the first pass, keep watching the folders "
        "and tag new or changed audio files with the same options (stop: Ctrl-C or SIGTERM)")  # fmt: skip
    add("--settle", type=float, default=2.0, metavar="S", help="--watch: tag a file once its size "
        "and mtime stayed the same for S seconds (2), so that a copy is never tagged half-way")  # fmt: skip
    add("--quiet", action="store_true", help="no progress bar: errors and the summary only")
    cluster.add_arguments(p)  # --engine ray and its sizing (genretag.cluster.run)
    return p


def check(args: argparse.Namespace) -> None:
    if not args.out and not args.write_tags:
        raise ConfigError("nothing to do: give --out FILE and/or --write-tags")
    if args.segments is not None and not args.out:
        raise ConfigError("--segments needs --out (the timeline goes next to it)")
    if (args.report or args.playlists) and not args.out:
        raise ConfigError("--report and --playlists read the --out table; add --out FILE")
    if (args.watch or args.embeddings) and not args.out:
        raise ConfigError(
            "--watch and --embeddings keep what is done in the --out table; add --out"
        )
    if not args.settle > 0:
        raise ConfigError(f"--settle must be a positive number of seconds, got {args.settle}")
    if args.dry_run and not args.write_tags:
        raise ConfigError("--dry-run previews --write-tags; add --write-tags")
    for name, value, low in [
        ("--top-k", args.top_k, 1),
        ("--max-genres", args.max_genres, 1),
        ("--workers", args.workers, 0),
        ("--batch-size", args.batch_size, 1),
    ]:
        if value is not None and value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    for name, value in [("--segments", args.segments), ("--hop", args.hop)]:
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
    for name, value in [("--threshold", args.threshold), ("--min-score", args.min_score)]:
        if isinstance(value, float) and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {value}")
    if args.segments and args.hop and args.segments != args.hop:
        raise ConfigError("--segments sets the hop between windows; leave out --hop")
    cluster.check(args)
