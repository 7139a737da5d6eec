"""Real recordings for the tagging benchmark: 30 s MP3 and Opus clips cut from a music folder.

Point ``--real`` at any folder of music (e.g. a Debian music package unpacked with
``apt-get download wesnoth-1.16-music && dpkg-deb -x *.deb /tmp/realmusic``). Each track gives
``per_track`` clips, 30 s from 30 s in: 44.1 kHz stereo 320 kbit/s MP3 (FMA's format) and
48 kHz stereo Opus. The clips are written once under the benchmark's folder and reused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

AUDIO = {".ogg", ".oga", ".opus", ".flac", ".wav", ".mp3"}
FORMATS = {  # name: (suffix, sample rate, soundfile format, subtype, extra arguments)
    "mp3": (".mp3", 44_100, "MP3", None, {"bitrate_mode": "CONSTANT", "compression_level": 0.0}),
    "opus": (".opus", 48_000, "OGG", "OPUS", {}),
}


def real_corpora(src: Path, out: Path, per_track: int = 2, clip_s: float = 30.0) -> dict:
    """{format: folder of clips} cut from the tracks under ``src`` (see the module docstring)."""
    tracks = sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO)
    if not tracks:
        raise SystemExit(f"--real {src}: no audio files (.ogg .flac .wav .mp3 .opus) found")
    folders = {name: out / f"real-{name}" for name in FORMATS}
    for t, track in enumerate(tracks):
        names = [f"{t:03d}-{k}" for k in range(per_track)]
        if all((folders[f] / f"{n}{FORMATS[f][0]}").exists() for f in FORMATS for n in names):
            continue
        audio, sr = sf.read(track, dtype="float32", always_2d=True)
        if audio.shape[1] == 1:
            audio = np.repeat(audio, 2, axis=1)
        for k, name in enumerate(names):
            start = round((k + 1) * clip_s * sr)
            clip = audio[start : start + round(clip_s * sr), :2]
            if len(clip) < clip_s * sr * 0.5:
                continue  # the track is too short for this clip
            for fmt, (suffix, rate, major, subtype, extra) in FORMATS.items():
                folders[fmt].mkdir(parents=True, exist_ok=True)
                data = clip if rate == sr else soxr.resample(clip, sr, rate, quality="HQ")
                path = folders[fmt] / f"{name}{suffix}"
                temp = path.with_name(f".{path.name}")
                sf.write(temp, data, rate, format=major, subtype=subtype, **extra)
                temp.rename(path)
    return folders
