"""Open a ``genretag report`` page in headless Chromium: a screenshot, and no console errors.

    python benchmarks/report_screenshot.py [REPORT.html] [--png shot.png] [--browser chromium]

Without REPORT.html, a demo-like report is written first (in a temporary folder): a tag table in
the real CSV layout for 300 files over fma_small's 8 genres, with ``genres``, an errors file,
window timelines, embeddings (so the page has its map) and paths holding <, &, quotes and a
non-UTF-8 byte. ``--map`` shoots only the map section of the page (docs/map.png). Chromium runs with
``--headless --screenshot --window-size=1200,2000``, its console on stderr
(``--enable-logging=stderr --v=0``: lines with ``CONSOLE``) and a network log; the script exits 1
on any console message of the page or any request that is not ``file:`` or ``data:``. Prints one
JSON object, then a one-line summary. Install the browser with ``apt-get install -y chromium``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from genretag import report

GENRES = ["Electronic", "Experimental", "Folk", "Hip-Hop", "Instrumental", "International"]
GENRES += ["Pop", "Rock"]


def demo_report(folder: Path, files: int = 300, seed: int = 0) -> Path:
    """A report of a synthetic, demo-like run under ``folder``; returns the HTML path."""
    rng = np.random.default_rng(seed)
    table = folder / "tags.csv"
    header = ["path", "duration", "size", "mtime_ns", "top1", "top1_score", "top2", "top2_score"]
    rows, segments = [header + ["genres"] + GENRES], []
    centres = rng.normal(0, 1, (len(GENRES), 16))
    embeddings = np.zeros((files, 16), np.float32)
    for k in range(files):
        true = k % len(GENRES)
        sharp = rng.uniform(0.5, 6.0)  # some files are easy, some ambiguous
        scores = 1 / (1 + np.exp(-(rng.normal(-2.0, 1.0, len(GENRES)))))
        scores[true] = 1 / (1 + np.exp(-rng.normal(sharp - 2.5, 1.0)))
        order = np.argsort(-scores)
        embeddings[k] = centres[true] + rng.normal(0, 2.5 / sharp, 16)
        name = f"Artist {k % 17}/Album {k % 5}/{k:03d} {GENRES[true]} song.mp3"
        if k == 3:
            name = "Odd/a <b> & \"c\" 'd' caf\udce9.mp3"
        path = f"/music/{name}"
        tops = [c for i in order[:2] for c in (GENRES[i], f"{scores[i]:.5f}")]
        chosen = "; ".join(GENRES[i] for i in order[:2] if scores[i] >= 0.3)
        rows.append([path, "30.000", 4_800_000 + k, 1_700_000_000_000_000_000 + k, *tops, chosen])
        rows[-1] += [f"{s:.5f}" for s in scores]
        steps = np.clip(scores + rng.normal(0, 0.15, (30, len(GENRES))), 0, 1)
        segments.append(
            {
                "path": path,
                "labels": GENRES,
                "start": [float(i) for i in range(30)],
                "scores": np.round(steps, 5).tolist(),
            }
        )
    with open(table, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    with open(folder / "tags.segments.jsonl", "wb") as handle:
        for row in segments:
            handle.write(
                (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
            )
    with open(folder / "tags.errors.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(
            [
                ["path", "error"],
                ["/music/Broken/silence.mp3", "no audio stream"],
                ["/music/Broken/<truncated>.flac", "cannot decode: Invalid data found & skipped"],
            ]
        )
    np.save(folder / "tags.embeddings.npy", embeddings)
    out = folder / "report.html"
    report.write_report(table, out, threshold=0.5, max_timelines=5)
    return out


def map_only(page: Path, work: Path) -> Path:
    """A page with the report's head and its map section only (for docs/map.png)."""
    text = page.read_text(encoding="utf-8")
    start = text.index("<h2>Map of the library")
    end = text.index("<h3>Outliers", start)
    out = work / "map.html"
    out.write_text(text[: text.index("<body>") + 6] + text[start:end] + "</body></html>\n")
    return out


def find_browser(name: str | None) -> str:
    for candidate in [name] if name else ["chromium", "chromium-browser", "google-chrome"]:
        found = shutil.which(candidate)
        if found:
            return found
    sys.exit(f"no browser found ({name or 'chromium'}): apt-get install -y chromium")


def shoot(browser: str, page: Path, png: Path, work: Path, size: str = "1200,2000") -> dict:
    """Run headless Chromium on ``page``; returns its console lines and non-local requests."""
    netlog = work / "netlog.json"
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # as root in a container
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--disable-background-networking",  # the browser's own requests (updates, sync, ...)
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-features=Translate,OptimizationHints,MediaRouter,SpellCheck",
        f"--user-data-dir={work / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        f"--log-net-log={netlog}",
        f"--screenshot={png}",
        f"--window-size={size}",
        page.resolve().as_uri(),
    ]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    remote = page_requests(netlog)
    return {
        "returncode": done.returncode,
        "seconds": round(time.monotonic() - start, 2),
        "console": console,
        "remote_requests": remote,
        "stderr_tail": done.stderr[-2000:] if done.returncode else "",
    }


def page_requests(netlog: Path) -> list[str]:
    """URLs the page asked for that are not file: or data: (the browser's own are left out).

    In Chromium's net log a request the page made has an ``initiator`` (``"null"`` for a
    file: page); the browser's own (update checks, sign-in) have ``"not an origin"``.
    """
    if not netlog.exists():
        return ["<no net log written>"]
    try:
        log = json.loads(netlog.read_text(errors="replace"))
    except ValueError:
        return ["<unreadable net log>"]
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = {
        e["params"]["url"]
        for e in log.get("events", [])
        if e.get("type") == start
        and "url" in e.get("params", {})
        and e["params"].get("initiator", "not an origin") != "not an origin"
    }
    return sorted(u for u in urls if not u.startswith(("file:", "data:", "about:")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("page", nargs="?", type=Path, help="a report (default: a demo-like one)")
    parser.add_argument("--png", type=Path, default=Path("report.png"), help="the screenshot")
    parser.add_argument("--browser", help="browser executable (default: chromium)")
    parser.add_argument("--map", action="store_true", help="shoot the map section only")
    args = parser.parse_args()
    browser = find_browser(args.browser)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        page = args.page or demo_report(work)
        if args.map:
            page = map_only(page, work)
        size = "960,800" if args.map else "1200,2000"
        result = shoot(browser, page, args.png.resolve(), work, size)
        result["html_bytes"] = page.stat().st_size
    result["png"] = str(args.png)
    result["png_bytes"] = args.png.stat().st_size if args.png.exists() else 0
    ok = (
        result["returncode"] == 0
        and result["png_bytes"] > 0
        and not result["console"]
        and not result["remote_requests"]
    )
    print(json.dumps({"benchmark": "report_screenshot", **result}, indent=1))
    print(
        f"# {'OK' if ok else 'FAILED'}: {result['png']} ({result['png_bytes'] / 1024:.0f} KiB), "
        f"page {result['html_bytes'] / 1024:.0f} KiB, {len(result['console'])} console messages, "
        f"{len(result['remote_requests'])} remote requests, {result['seconds']} s"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
