"""The HTML report of a tag run: counts, low-confidence and failed files, inline SVG, no network."""

from __future__ import annotations

import csv
import errno
import json
import re
from pathlib import Path

import genretag.io
from genretag import report

LABELS = ["Electronic", "Hip-Hop", "Old-Time / Historic"]
ODD = "/music/a <b> & \"c\" 'd' caf\udce9.mp3"  # <, &, quotes and a non-UTF-8 byte


def write_table(folder: Path, genres: bool = False) -> Path:
    """A tag table in the real CSV layout (top_k 2) with 6 files, and its errors file."""
    rows = [
        ("/music/e1.mp3", [0.9, 0.1, 0.05]),
        ("/music/e2.mp3", [0.8, 0.3, 0.1]),
        ("/music/e3.mp3", [0.7, 0.2, 0.1]),
        ("/music/h1.mp3", [0.2, 0.95, 0.1]),
        ("/music/o1.mp3", [0.1, 0.2, 0.45]),
        (ODD, [0.3, 0.2, 0.1]),
    ]
    header = ["path", "duration", "size", "mtime_ns", "top1", "top1_score", "top2", "top2_score"]
    header += ["genres"] if genres else []
    lines = [header + LABELS]
    for path, s in rows:
        order = sorted(range(3), key=lambda i: -s[i])
        tops = [c for i in order[:2] for c in (LABELS[i], f"{s[i]:.5f}")]
        chosen = ["; ".join(LABELS[i] for i in order[:2] if s[i] >= 0.25)] if genres else []
        lines.append([path, "30.000", "1234", "1700000000000000000", *tops, *chosen, *s])
    table = folder / "tags.csv"
    with open(table, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        csv.writer(handle, lineterminator="\n").writerows(lines)
    with open(folder / "tags.errors.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(
            [["path", "error"], ["/music/broken <x>.mp3", "cannot decode: Invalid data & more"]]
        )
    return table


def test_report_shows_counts_low_confidence_and_failures(tmp_path):
    table = write_table(tmp_path)
    out = tmp_path / "out" / "report.html"
    report.write_report(table, out, threshold=0.5)
    page = out.read_text(encoding="utf-8")  # valid UTF-8 despite the non-UTF-8 path
    assert "<b>6</b> files" in page and "<b>1</b> failed" in page
    counts = re.search(r'<table class="counts">.*?</table>', page, re.S).group(0)
    assert "<td>Electronic</td><td>4</td>" in counts  # e1 e2 e3 and the odd one
    assert "<td>Hip-Hop</td><td>1</td>" in counts
    assert "<td>Old-Time / Historic</td><td>1</td>" in counts
    low = page.split("Least confident files")[1].split("Files that failed")[0]
    assert ": 2</h2>" in low  # o1 (0.45) and the odd one (0.3); e3 at 0.7 is not
    assert "o1.mp3" in low and "e3.mp3" not in low
    assert low.index("a &lt;b&gt;") < low.index("o1.mp3")  # least confident first
    assert "/music/a &lt;b&gt; &amp; &quot;c&quot; &#x27;d&#x27; caf\\xe9.mp3" in low
    assert "<b>" not in low and ODD not in page
    failed = page.split("Files that failed")[1]
    assert "/music/broken &lt;x&gt;.mp3" in failed and "Invalid data &amp; more" in failed
    assert "<svg" in page and "<?xml" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<script" not in page.lower()
    assert not list(out.parent.glob(".*.tmp"))


def test_chosen_genres_and_timelines(tmp_path):
    table = write_table(tmp_path, genres=True)
    with open(tmp_path / "tags.segments.jsonl", "w", encoding="utf-8") as handle:
        for k in range(3):
            row = {
                "path": f"/music/t{k} <seg>.mp3",
                "labels": LABELS,
                "start": [0.0, 1.0, 2.0, 3.0],
                "scores": [[0.9, 0.1, 0.0], [0.5, 0.5, 0.1], [0.2, 0.8, 0.1], [0.1, 0.9, 0.3]],
            }
            handle.write(json.dumps(row) + "\n")
    out = tmp_path / "r.html"
    report.write_report(table, out, max_timelines=2)
    page = out.read_text(encoding="utf-8")
    counts = re.search(r'<table class="counts">.*?</table>', page, re.S).group(0)
    assert "files with it chosen" in counts
    # chosen (>= 0.25 among the top 2): Electronic e1 e2 e3 odd; Hip-Hop e2 h1; Old-Time o1
    assert "<td>Electronic</td><td>4</td><td>4</td>" in counts
    assert "<td>Hip-Hop</td><td>1</td><td>2</td>" in counts
    timelines = page.split("Timelines")[1]
    assert "/music/t0 &lt;seg&gt;.mp3" in timelines and "t1 &lt;seg&gt;" in timelines
    assert "t2 &lt;seg&gt;" not in timelines  # max_timelines=2
    assert page.count("<svg") == 2 + 2  # counts, scores, two timelines


def test_jsonl_table(tmp_path):
    rows = [
        {
            "path": "/m/a.mp3",
            "duration": 60.0,
            "size": 1,
            "mtime_ns": 2,
            "genres": [{"label": "Hip-Hop", "score": 0.8}],
            "scores": {"Electronic": 0.1, "Hip-Hop": 0.8, "Old-Time / Historic": 0.0},
        },
        {
            "path": "/m/b.mp3",
            "duration": 60.0,
            "size": 1,
            "mtime_ns": 2,
            "genres": [],
            "scores": {"Electronic": 0.3, "Hip-Hop": 0.2, "Old-Time / Historic": 0.1},
        },
    ]
    table = tmp_path / "tags.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"path": "/m/torn', "utf-8")
    report.write_report(table, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<b>2</b> files" in page and "<b>0.03</b> h of audio" in page
    assert "<td>Hip-Hop</td><td>1</td><td>1</td>" in page
    assert "/m/b.mp3" in page.split("Least confident")[1]


def test_command_defaults_help_and_one_line_errors(tmp_path, capsys):
    table = write_table(tmp_path)
    assert report.main([str(table)]) == 0
    assert (tmp_path / "tags.report.html").is_file()
    assert "tags.report.html" in capsys.readouterr().out
    assert report.main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out
    for argv, words in [
        ([str(tmp_path / "none.csv")], "no such tag table"),
        ([str(table), "--threshold", "2"], "--threshold"),
        ([str(table), "--errors", str(tmp_path / "x.csv")], "--errors"),
        ([str(table), "--bogus"], "unrecognized arguments"),
    ]:
        assert report.main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    assert report.main([str(tmp_path / "notes.csv")]) == 2
    assert "no `path` column" in capsys.readouterr().err


def test_failed_write_keeps_the_old_report(tmp_path, monkeypatch, capsys):
    table = write_table(tmp_path)
    out = tmp_path / "r.html"
    out.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(genretag.io.os, "fsync", full)
    assert report.main([str(table), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left" in err and str(out) in err and err.count("\n") == 1
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "tags.csv", "tags.errors.csv"]
