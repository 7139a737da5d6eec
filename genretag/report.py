"""``genretag report``: one self-contained HTML page about a ``genretag tag`` run.

    genretag report tags.csv                      # -> tags.report.html beside it
    genretag report tags.jsonl --out report.html --threshold 0.4 --timelines 50

The page needs no network and runs no script: CSS and SVG pictures (matplotlib) are inline. It
shows how many files each genre was given (top-1, and the chosen genres when the table has a
``genres`` column), the score distribution per genre, the least confident files (best score
below ``--threshold``), the files that failed and why (``<stem>.errors.csv``) and, when
``<stem>.segments.jsonl`` exists, a timeline of the window scores for the first files; when
``<stem>.embeddings.npy`` exists (``tag --embeddings``), a map of the library by sound
(genretag.librarymap).

Tables are read as ``genretag tag`` writes them: CSV (``path,duration,size,mtime_ns``, then
``top1,top1_score,...``, optionally ``genres`` as "A; B", then one score column per label) or
JSON lines (``{"path", "duration", "genres": [{"label", "score"}], "scores": {label: score}}``).
Paths that are not valid UTF-8 (kept through ``surrogateescape``) are shown with ``\\xNN``
escapes; every path is HTML-escaped.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import logging
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from genretag.errors import CommandParser, ConfigError, run_command
from genretag.io import atomic_write

log = logging.getLogger(__name__)

FIXED = ("path", "duration", "size", "mtime_ns")
_TOP = re.compile(r"top\d+(_score)?")
MAX_ROWS = 200  # rows shown in each file list (the rest are counted)
MAX_LINES = 6  # labels drawn in one timeline (those with the highest peaks)
RC = {"svg.fonttype": "none", "svg.hashsalt": "genretag", "font.size": 9, "text.parse_math": False}


# -- reading --------------------------------------------------------------------------------------
def read_table(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(files, scores) of a tag table: ``files`` has path, duration, genres (list[str] or None)
    and top1 (argmax label), best (its score); ``scores`` is (N, C), one column per label."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such tag table (give the --out of a genretag tag run)")
    if path.suffix.lower() == ".jsonl":
        rows = [r for r in _json_lines(path) if isinstance(r.get("scores"), dict)]
        scores = pd.DataFrame([r["scores"] for r in rows], dtype=np.float64)
        files = pd.DataFrame(
            {
                "path": [str(r.get("path", "")) for r in rows],
                "duration": [r.get("duration") for r in rows],
                "genres": [_genre_list(r["genres"]) if "genres" in r else None for r in rows],
            }
        )
    elif path.suffix.lower() == ".csv":
        files, scores = _read_csv(path)
    else:
        raise ConfigError(f"{path}: a tag table is a .csv or a .jsonl file")
    if scores.shape[1] == 0 and len(files):
        raise ConfigError(f"{path}: no score columns found; is this a genretag tag table?")
    files["duration"] = pd.to_numeric(files["duration"], errors="coerce")
    values = scores.to_numpy(np.float64) if len(scores) else np.zeros((0, scores.shape[1]))
    best = np.nanargmax(np.nan_to_num(values, nan=-1.0), 1) if len(values) else np.zeros(0, int)
    files["top1"] = [scores.columns[i] for i in best]
    files["best"] = values[np.arange(len(values)), best] if len(values) else []
    return files, scores


def _read_csv(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        table = pd.read_csv(
            path,
            dtype=object,  # Python strings: pandas 3's str dtype refuses surrogate-escaped names
            keep_default_na=False,
            encoding="utf-8",
            encoding_errors="surrogateescape",
            on_bad_lines="warn",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as error:
        raise ConfigError(f"{path}: cannot be read as a CSV tag table ({error})") from None
    if "path" not in table.columns:
        raise ConfigError(f"{path}: no `path` column; is this a genretag tag table?")
    names = [c for c in table.columns if c not in FIXED and c != "genres" and not _TOP.fullmatch(c)]
    scores = table[names].apply(pd.to_numeric, errors="coerce")
    scores = scores.loc[:, scores.notna().any() | (len(table) == 0)]  # text columns are not labels
    keep = scores.notna().any(axis=1).to_numpy()  # a torn last line has no scores
    files = table.loc[keep, ["path"]].reset_index(drop=True)
    files["duration"] = table.loc[keep, "duration"].to_numpy() if "duration" in table else np.nan
    files["genres"] = (
        [_genre_list(g) for g in table.loc[keep, "genres"]] if "genres" in table else None
    )
    return files, scores[keep].reset_index(drop=True)


def _genre_list(value) -> list[str]:
    """A genres cell as names: "A; B", ["A", "B"] or [{"label": "A", "score": .9}, ...]."""
    if isinstance(value, str):
        return [g.strip() for g in value.split(";") if g.strip()]
    if isinstance(value, list):
        return [
            str(g.get("label", g.get("name", ""))) if isinstance(g, dict) else str(g) for g in value
        ]
    return []


def _json_lines(path: Path) -> list[dict]:
    rows = []
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                row = json.loads(raw.decode("utf-8", "surrogateescape"))
            except ValueError:
                continue  # a torn last line of an interrupted run
            if isinstance(row, dict):
                rows.append(row)
    return rows


def read_errors(path: Path | None) -> pd.DataFrame:
    """``path,error`` rows of an errors file (none if it is missing)."""
    if path is None or not path.is_file():
        return pd.DataFrame({"path": [], "error": []})
    try:
        errors = pd.read_csv(
            path, dtype=object, keep_default_na=False, encoding_errors="surrogateescape"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ConfigError(f"{path}: cannot be read as path,error rows ({error})") from None
    if not {"path", "error"} <= set(errors.columns):
        raise ConfigError(f"{path}: expected the columns path,error")
    return errors


# -- pictures -------------------------------------------------------------------------------------
def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # constrained layout: no "tight" pass
    text = buf.getvalue()
    return text[text.index("<svg") :]  # no XML prolog or DOCTYPE inside HTML


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    return Figure(figsize=(width, height), layout="constrained")


def counts_svg(counts: pd.DataFrame) -> str:
    """Horizontal bars: files per genre (columns of ``counts``: top1 and maybe chosen)."""
    fig = _figure(7.5, 0.6 + 0.22 * len(counts))
    ax = fig.add_subplot()
    y = np.arange(len(counts))
    height = 0.8 / counts.shape[1]
    for k, column in enumerate(counts.columns):
        ax.barh(y + k * height, counts[column], height, label=column)
    ax.set_yticks(y + 0.4 - height / 2, [_short(n) for n in counts.index])
    ax.invert_yaxis()
    ax.set_xlabel("files")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def scores_svg(scores: pd.DataFrame, threshold: float) -> str:
    """Box plots of each label's score over files (5th-95th percentile whiskers), by median."""
    order = scores.median().sort_values(ascending=False).index
    fig = _figure(7.5, 0.6 + 0.22 * len(order))
    ax = fig.add_subplot()
    data = [scores[c].dropna().to_numpy() for c in order]
    ax.boxplot(data, orientation="horizontal", whis=(5, 95), showfliers=False, widths=0.6)
    ax.set_yticks(np.arange(1, len(order) + 1), [_short(n) for n in order])
    ax.invert_yaxis()
    ax.axvline(threshold, color="tab:red", lw=1, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"score (red: the threshold, {threshold:g})")
    return _svg(fig)


def timeline_svg(row: dict) -> str:
    """Window scores over time for the labels with the highest peaks in one segments row."""
    scores = np.asarray(row.get("scores") or [], np.float64).reshape(len(row.get("start", [])), -1)
    labels = list(row.get("labels") or [])
    fig = _figure(7.5, 1.8)
    ax = fig.add_subplot()
    if scores.size and scores.shape[1] == len(labels):
        for c in np.argsort(-scores.max(0), kind="stable")[:MAX_LINES]:
            ax.plot(row["start"], scores[:, c], lw=1.2, label=_short(labels[c]))
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_ylim(0, 1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    return _svg(fig)


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


# -- the page -------------------------------------------------------------------------------------
def shown(path: str) -> str:
    """A path as HTML text: non-UTF-8 bytes as ``\\xNN``, then escaped (quotes too)."""
    text = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return html.escape(text, quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], total: int, cls: str = "") -> str:
    """An HTML table of already escaped cells; a note when ``total`` > the rows shown."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    more = f"<p class=note>… and {total - len(rows)} more.</p>" if total > len(rows) else ""
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}'


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1em;margin:1.2em 0 .2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
td.n,th.n{text-align:right}table.files td:first-child{font-family:monospace;word-break:break-all}
.note{color:#666}.stats span{margin-right:2em}svg{max-width:100%;height:auto}
"""


def _counts_section(files: pd.DataFrame, scores: pd.DataFrame) -> str:
    counts = pd.DataFrame(index=pd.Index(scores.columns, dtype=object))
    counts["top1"] = files["top1"].value_counts().reindex(counts.index, fill_value=0)
    has_chosen = files["genres"].notna().any() if len(files) else False
    if has_chosen:
        chosen = pd.Series([g for gs in files["genres"].dropna() for g in gs], dtype=object)
        extra = [g for g in chosen.unique() if g not in counts.index]  # renamed by a genre map
        counts = counts.reindex([*counts.index, *extra], fill_value=0)
        counts["chosen"] = chosen.value_counts().reindex(counts.index, fill_value=0)
    counts = counts.sort_values(list(counts.columns), ascending=False, kind="stable")
    median = scores.median()
    rows = [
        [html.escape(str(name)), *(f"{int(v)}" for v in counts.loc[name])]
        + [f"{median[name]:.3f}" if name in median.index else ""]
        for name in counts.index
    ]
    header = ["genre", "top-1 files", *(["files with it chosen"] if has_chosen else []), "median"]
    shown_counts = counts[counts.sum(axis=1) > 0] if len(counts) > 40 else counts
    svg = counts_svg(shown_counts) if len(shown_counts) and len(files) else ""
    return "<h2>Genres given</h2>" + svg + _table(header, rows, len(rows), "counts")


def render(
    table: Path,
    files: pd.DataFrame,
    scores: pd.DataFrame,
    errors: pd.DataFrame,
    timelines: list[dict],
    threshold: float,
    embeddings: np.ndarray | None = None,
) -> str:
    """The whole HTML page (a str of valid UTF-8 text); ``embeddings`` (N, D) add the map."""
    from genretag import librarymap

    hours = float(np.nansum(files["duration"])) / 3600 if len(files) else 0.0
    parts = [
        f"<h1>genretag report: {shown(str(table))}</h1>",
        "<p class=stats>"
        f"<span><b>{len(files)}</b> files</span><span><b>{hours:.2f}</b> h of audio</span>"
        f"<span><b>{scores.shape[1]}</b> labels</span><span><b>{len(errors)}</b> failed</span>"
        f"<span>written {datetime.now():%Y-%m-%d %H:%M}</span></p>",
    ]
    if len(files):
        parts.append(_counts_section(files, scores))
        parts += ["<h2>Score distribution per genre</h2>", scores_svg(scores, threshold)]
    if embeddings is not None:
        parts.append(librarymap.section(files, embeddings, threshold, shown))
    low = files[files["best"] < threshold].sort_values("best", kind="stable")
    parts.append(f"<h2>Least confident files (best score below {threshold:g}): {len(low)}</h2>")
    rows = [
        [shown(r.path), html.escape(str(r.top1)), f"{r.best:.3f}"]
        for r in low.head(MAX_ROWS).itertuples()
    ]
    parts.append(_table(["path", "best genre", "score"], rows, len(low), "files"))
    parts.append(f"<h2>Files that failed: {len(errors)}</h2>")
    failed = errors.head(MAX_ROWS)
    rows = [[shown(p), shown(e)] for p, e in zip(failed["path"], failed["error"], strict=True)]
    parts.append(_table(["path", "error"], rows, len(errors), "files"))
    if timelines:
        parts.append(f"<h2>Timelines (first {len(timelines)} files)</h2>")
        for row in timelines:
            parts += [f"<h3>{shown(str(row.get('path', '')))}</h3>", timeline_svg(row)]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>genretag report</title><style>{CSS}{librarymap.CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_report(
    table: Path,
    out: Path,
    *,
    threshold: float = 0.5,
    errors: Path | None = None,
    segments: Path | None = None,
    max_timelines: int = 20,
) -> None:
    """Write the HTML report of ``table`` to ``out`` (atomically: a temporary file, then rename).

    ``errors`` / ``segments`` default to ``<stem>.errors.csv`` / ``<stem>.segments.jsonl``
    beside the table, when those exist. At most ``max_timelines`` timelines are drawn.
    """
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "genretag report needs matplotlib: pip install 'genretag[report]'"
        ) from None
    table, out = Path(table), Path(out)
    errors = errors or table.with_name(table.stem + ".errors.csv")
    segments = segments or table.with_name(table.stem + ".segments.jsonl")
    files, scores = read_table(table)
    failed = read_errors(errors)
    timelines = _json_lines(segments)[: max(max_timelines, 0)] if segments.is_file() else []
    from genretag.tagger.embeddings import read_embeddings

    embeddings = read_embeddings(table, len(files), required=False)
    with matplotlib.rc_context(RC):
        page = render(table, files, scores, failed, timelines, threshold, embeddings)
    atomic_write(out, page)
    log.info("wrote %s (%d files, %d failed)", out, len(files), len(failed))


# -- the command ---------------------------------------------------------------------------------
EXAMPLES = """examples:
  genretag report tags.csv                          # writes tags.report.html beside it
  genretag report tags.jsonl --out ~/report.html --threshold 0.4
  genretag report tags.csv --timelines 50           # more timelines (from tags.segments.jsonl)

Exit code: 0 written, 1 the report could not be written (the old one is kept), 2 a usage error
or a table that cannot be read.
"""


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="genretag report",
        description="Write one self-contained HTML page about the results of genretag tag.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("table", type=Path, help="the --out of genretag tag (.csv or .jsonl)")
    add("--out", type=Path, metavar="FILE", help="the HTML file (default: <stem>.report.html)")
    add("--threshold", type=float, default=0.5, metavar="P",
        help="files whose best score is below P are listed as least confident (0.5)")  # fmt: skip
    add("--errors", type=Path, metavar="FILE", help="failures (default: <stem>.errors.csv)")
    add("--segments", type=Path, metavar="FILE", help="timelines (default: <stem>.segments.jsonl)")
    add("--timelines", type=int, default=20, metavar="N", help="timelines drawn, at most (20)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``genretag report ...``: 0 when written, 2 on a usage error or an unreadable table."""
    return run_command("report", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold {args.threshold}: give a score between 0 and 1")
    out = args.out or args.table.with_name(args.table.stem + ".report.html")
    for name, path in [("--errors", args.errors), ("--segments", args.segments)]:
        if path is not None and not path.is_file():
            raise ConfigError(f"{name} {path}: no such file")
    write_report(
        args.table,
        out,
        threshold=args.threshold,
        errors=args.errors,
        segments=args.segments,
        max_timelines=args.timelines,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
