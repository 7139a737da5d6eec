"""Decode speed per core: random 3 s / 10 s crops and whole clips from FMA-format MP3s.

    python benchmarks/decode.py [--quick] [--seconds 30] [--min-time 2]
    python benchmarks/decode.py --real DIR_OR_FILE ...

``--real``: whole real files as ``tag`` reads them, per format (the container and codec
libsndfile or FFmpeg reports): x realtime per core of decoding to 16 kHz mono, and for Ogg Opus
the same files through libsndfile alone in the same run (the path before genretag 0.4 and the one
crops take), with the largest sample difference and the length difference.

Files as FMA has them: 30 s, 44.1 kHz stereo, 320 kbit/s CBR, ID3v2 tag with a cover picture;
also 48 kHz stereo and 44.1 kHz mono. Every item is decoded, downmixed to mono and resampled to
16 kHz. In the same run, the alternatives:

* ``librosa_offset_crop``: ``librosa.load(path, sr=16000, mono=True, offset=, duration=)``, the
  fair comparison for a crop (librosa seeks too; the file's length from
  ``librosa.get_duration(path=)``, a header read, as the decoder reads its header);
* ``librosa_full_load``: ``librosa.load(path, sr=16000, mono=True)`` of the whole file, then
  slicing (one librosa "crop" costs one whole-file load): the comparison for whole clips;
* the crop through FFmpeg (PyAV, the decoder's fallback path) instead of libsndfile.

``crop_10s_vs_librosa_offset`` and ``crop_10s_vs_librosa_full_load`` are the ratios of the
10 s crop rate to each; ``full_clip_vs_librosa_full_load`` compares whole-clip decodes.

Rates are per core: items per second of this process's CPU time (single-threaded work), so they
hold on a busy machine; wall-clock rates are reported beside them. Prints one JSON object, then
a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from _corpus import write_fma_mp3  # benchmarks/ is on the path when run as a script

from genretag.data import audio

SR = 16_000
FORMATS = {  # name -> (native rate, channels)
    "44k_stereo": (44_100, 2),
    "48k_stereo": (48_000, 2),
    "44k_mono": (44_100, 1),
}


def rate(fn: Callable[[int], object], min_time: float, min_calls: int = 3) -> dict[str, float]:
    """Call ``fn(i)`` until ``min_time`` s of CPU have passed: calls per CPU second and wall."""
    fn(0)  # warm up: imports, filter design, file into the page cache
    calls, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while calls < min_calls or time.process_time() - cpu0 < min_time:
        fn(calls + 1)
        calls += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"per_core_per_s": round(calls / cpu, 1), "wall_per_s": round(calls / wall, 1)}


def librosa_crop(path: Path, seconds: float | None, position: float) -> np.ndarray:
    """The reference: load the whole file with librosa (16 kHz mono), then slice the crop."""
    import librosa

    x, _ = librosa.load(path, sr=SR, mono=True)
    if seconds is None:
        return x
    length = round(seconds * SR)
    start = round(position * max(0, len(x) - length))
    return x[start : start + length]


def librosa_offset_crop(path: Path, seconds: float, position: float) -> np.ndarray:
    """librosa's own crop: ``librosa.load`` with ``offset``/``duration`` (16 kHz mono)."""
    import librosa

    total = librosa.get_duration(path=path)
    offset = position * max(0.0, total - seconds)
    x, _ = librosa.load(path, sr=SR, mono=True, offset=offset, duration=seconds)
    return x


def ffmpeg_crop(path: Path, seconds: float, position: float) -> np.ndarray:
    """The same crop through the decoder's PyAV (FFmpeg) source instead of libsndfile."""
    source = audio._open_av(Path(path), "")  # the fallback path, forced for comparison
    try:
        count = round(seconds * source.sample_rate)
        start = round(position * max(0, source.frames - count))
        blocks = audio._resampled(source, path, SR, start, count)
        return np.concatenate(list(blocks))[: round(seconds * SR)]
    finally:
        source.close()


def exactness(path: Path, offsets: tuple[float, ...] = (0.5, 3.3, 7.77)) -> dict[str, float]:
    """Crops at the native rate vs the same span of the whole decode (must be 0: sample-exact),
    and the whole 16 kHz decode vs librosa's (same libsndfile samples, mean, soxr HQ)."""
    native = audio.info(path).sample_rate
    full = audio.decode(path, native)
    worst = 0.0
    for offset in offsets:
        crop = audio.decode(path, native, offset, 1.5)
        start = round(offset * native)
        worst = max(worst, float(np.abs(crop - full[start : start + len(crop)]).max()))
    ours, reference = audio.decode(path, SR), librosa_crop(path, None, 0.0)
    n = min(len(ours), len(reference))
    return {
        "native_crop_vs_full_max_abs": worst,
        "full_16k_vs_librosa_max_abs": float(np.abs(ours[:n] - reference[:n]).max()),
        "full_16k_vs_librosa_length_diff": len(ours) - len(reference),
    }


def measure(files: list[Path], min_time: float, with_ffmpeg: bool) -> dict:
    """Every figure for one format: crops, whole clips, the librosa reference, exactness."""
    positions = np.random.default_rng(0).random(100_000)

    def pick(i: int) -> tuple[Path, float]:
        return files[i % len(files)], float(positions[i % len(positions)])

    figures: dict = {"bytes": files[0].stat().st_size}
    for crop in (3.0, 10.0):
        figures[f"crop_{crop:g}s"] = rate(
            lambda i, c=crop: audio.random_crop(pick(i)[0], SR, c, pick(i)[1]), min_time
        )
    figures["full_clip"] = rate(lambda i: audio.decode(pick(i)[0], SR), min_time)
    figures["librosa_offset_crop"] = rate(
        lambda i: librosa_offset_crop(pick(i)[0], 10.0, pick(i)[1]), min_time
    )
    figures["librosa_full_load"] = rate(
        lambda i: librosa_crop(pick(i)[0], 10.0, pick(i)[1]), min_time
    )
    if with_ffmpeg:
        figures["ffmpeg_crop_10s"] = rate(
            lambda i: ffmpeg_crop(pick(i)[0], 10.0, pick(i)[1]), min_time
        )

    def ratio(ours: str, theirs: str) -> float:
        return round(figures[ours]["per_core_per_s"] / figures[theirs]["per_core_per_s"], 2)

    figures["crop_10s_vs_librosa_offset"] = ratio("crop_10s", "librosa_offset_crop")
    figures["crop_10s_vs_librosa_full_load"] = ratio("crop_10s", "librosa_full_load")
    figures["full_clip_vs_librosa_full_load"] = ratio("full_clip", "librosa_full_load")
    figures["check"] = exactness(files[0])
    return figures


def real_files(paths: list[Path]) -> dict:
    """x realtime per core of whole decodes to 16 kHz, per format; Opus also libsndfile alone."""
    from genretag.data import sources

    def timed(path: Path) -> tuple[np.ndarray, float]:
        cpu = time.process_time()
        x = audio.decode(path, SR)
        return x, time.process_time() - cpu

    formats: dict = {}
    for path in paths:
        kind = codec(path)
        ours, cpu = timed(path)
        row = formats.setdefault(kind, {"files": 0, "audio_s": 0.0, "cpu_s": 0.0})
        row["files"] += 1
        row["audio_s"] += len(ours) / SR
        row["cpu_s"] += cpu
        if kind == "OGG/OPUS":
            real = sources.opus_frames
            sources.opus_frames = lambda *_: None  # libsndfile alone, as before
            try:
                alone, cpu_alone = timed(path)
            finally:
                sources.opus_frames = real
            row["libsndfile_cpu_s"] = row.get("libsndfile_cpu_s", 0.0) + cpu_alone
            n = min(len(ours), len(alone))
            row["max_abs_diff"] = max(
                row.get("max_abs_diff", 0.0), float(np.abs(ours[:n] - alone[:n]).max())
            )
            row["length_diff"] = max(row.get("length_diff", 0), abs(len(ours) - len(alone)))
    for row in formats.values():
        row["x_realtime_per_core"] = round(row["audio_s"] / row["cpu_s"], 1)
        if "libsndfile_cpu_s" in row:
            row["libsndfile_x_realtime_per_core"] = round(
                row["audio_s"] / row["libsndfile_cpu_s"], 1
            )
            row["speedup"] = round(row["libsndfile_cpu_s"] / row["cpu_s"], 2)
        for key in ("audio_s", "cpu_s", "libsndfile_cpu_s"):
            if key in row:
                row[key] = round(row[key], 2)
    return formats


def codec(path: Path) -> str:
    """``FORMAT/SUBTYPE`` as libsndfile names it, else ``FFmpeg/<codec>``."""
    try:
        found = sf.info(path)
        return f"{found.format}/{found.subtype}"
    except Exception:
        import av

        with av.open(str(path)) as container:
            return f"FFmpeg/{container.streams.audio[0].codec_context.name}"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return sorted(f for f in flags if f.startswith(("avx", "amx")))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short files, ~0.2 s per figure")
    parser.add_argument("--seconds", type=float, default=None, help="file length (default 30)")
    parser.add_argument("--min-time", type=float, default=None, help="CPU seconds per figure")
    parser.add_argument("--real", nargs="+", type=Path, help="real files or folders (see above)")
    args = parser.parse_args()
    if args.real:
        files = sorted(
            f
            for p in args.real
            for f in ([p] if p.is_file() else p.rglob("*"))
            if f.suffix.lower() in (".mp3", ".flac", ".ogg", ".opus", ".m4a", ".wav")
        )
        print(
            json.dumps(
                {"benchmark": "decode-real", "cpu_flags": cpu_flags(), "formats": real_files(files)}
            )
        )
        return
    seconds = args.seconds or (12.0 if args.quick else 30.0)
    min_time = args.min_time or (0.2 if args.quick else 2.0)
    result: dict = {
        "benchmark": "decode",
        "quick": args.quick,
        "file_seconds": seconds,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "formats": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (native, channels) in FORMATS.items():
            files = [
                write_fma_mp3(Path(tmp) / f"{name}_{i}.mp3", seconds, native, channels, seed=i)
                for i in range(2 if args.quick else 4)
            ]
            result["formats"][name] = measure(files, min_time, with_ffmpeg=name == "44k_stereo")
    m = result["formats"]["44k_stereo"]
    result["targets"] = {
        "crop_10s_per_core_per_s": {"target": 70, "measured": m["crop_10s"]["per_core_per_s"]},
        "crop_10s_vs_librosa_offset": {
            "target": 2.0,
            "measured": m["crop_10s_vs_librosa_offset"],
        },
    }
    print(json.dumps(result))
    print(
        f"# decode 44.1 kHz stereo MP3 ({seconds:g} s), per core: 10 s crops "
        f"{m['crop_10s']['per_core_per_s']}/s, 3 s crops {m['crop_3s']['per_core_per_s']}/s, "
        f"whole clips {m['full_clip']['per_core_per_s']}/s; 10 s crops vs librosa offset/duration "
        f"({m['librosa_offset_crop']['per_core_per_s']}/s) x{m['crop_10s_vs_librosa_offset']}, "
        f"vs librosa whole-file load ({m['librosa_full_load']['per_core_per_s']}/s) "
        f"x{m['crop_10s_vs_librosa_full_load']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
