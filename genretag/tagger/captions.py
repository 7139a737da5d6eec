"""SRT captions of a file's timeline: the top label of each segment, runs of one label merged.

Media players show them as subtitles beside the audio (``--segments`` with a Freesound model).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from genretag.io import atomic_write


def write_srt(folder: Path, path: str, top: list[str], hop_s: float, duration: float) -> Path:
    """SRT captions of the top label per segment (runs of one label merged) for ``path``."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    target = folder / f"{Path(path).stem}.{digest}.srt"
    cues, start = [], 0
    for i in range(1, len(top) + 1):
        if i == len(top) or top[i] != top[start]:
            end = min(i * hop_s, max(duration, start * hop_s))
            cues.append(
                f"{len(cues) + 1}\n{_srt_time(start * hop_s)} --> {_srt_time(end)}\n{top[start]}\n"
            )
            start = i
    atomic_write(target, "\n".join(cues))
    return target


def _srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
