"""Decoder fuzzing: a damaged file decodes to finite float32 or raises AudioDecodeError, quickly.

Every file is decoded five ways (whole, a segment, a random crop, a stream, and through the
PyAV/FFmpeg fallback) in a worker process (tests/fuzzing.py) under a 1 GiB address-space limit,
so a native crash, a hang or a runaway allocation is a failure that names the file and what was
done to it, and the rest of the corpus still runs.
"""

from __future__ import annotations

import collections
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genretag.data import audio
from tests.fuzzing import (
    Case,
    DecodeRunner,
    Outcome,
    _ogg_pages,
    _put32,
    fix_ogg_crcs,
    write_corpus,
    write_sources,
)

SEED = 6
PER_SOURCE = 50  # x 11 sources = 550 damaged files in the default run (~25 s on 2 cores)
SLOW_PER_SOURCE = 500  # x 11 x 3 seeds = 16,500 in the slow run
PEAK_GROWTH_MB = 100  # what one 2.5 s file may add to a worker's peak resident memory


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One valid 2.5 s clip per format and codec path (tests/fuzzing.py SOURCES)."""
    return write_sources(tmp_path_factory.mktemp("sources"))


def _problems(cases: list[Case], outcomes: list[Outcome]) -> list[str]:
    """One line per file that crashed, hung, answered wrongly or took too much memory."""
    problems = []
    for case, outcome in zip(cases, outcomes, strict=True):
        where = f"{case.path.name} ({case.what})"
        if outcome.status != "done":
            problems.append(f"{where}: {outcome.status}: {outcome.detail}")
            continue
        for op, result in outcome.report["ops"].items():
            if result["result"] not in ("ok", "decode-error"):
                problems.append(f"{where}: {op}: {result['result']}: {result.get('detail')}")
        growth = outcome.report["peak_mb"] - outcome.report["peak_mb_before"]
        if growth > PEAK_GROWTH_MB:
            problems.append(f"{where}: peak memory grew by {growth:.0f} MB")
    return problems


def _fuzz(folder: Path, sources: dict[str, Path], per_source: int, seed: int) -> None:
    cases = write_corpus(folder / "corpus", sources, per_source, seed)
    outcomes = DecodeRunner(folder).run([c.path for c in cases])
    problems = _problems(cases, outcomes)
    assert not problems, (
        f"{len(problems)} problems in {len(cases)} damaged files (kept in {folder}, seed {seed}):\n"
        + "\n".join(problems[:40])
    )
    # The mutations are neither all harmless nor all fatal: each source yields both outcomes.
    tally = collections.Counter(
        (case.source, outcome.report["ops"]["decode"]["result"])
        for case, outcome in zip(cases, outcomes, strict=True)
    )
    for name in sources:
        assert tally[(name, "ok")] and tally[(name, "decode-error")], (name, tally)


def test_damaged_files_decode_or_raise_within_5_s(tmp_path: Path, sources: dict[str, Path]) -> None:
    _fuzz(tmp_path, sources, PER_SOURCE, SEED)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_damaged_files_large_corpus(tmp_path: Path, sources: dict[str, Path], seed: int) -> None:
    _fuzz(tmp_path, sources, SLOW_PER_SOURCE, seed)


# -- huge declared lengths -----------------------------------------------------------------------
def _flac_total_samples_maxed(data: bytearray) -> None:
    packed = int.from_bytes(data[18:26], "big") | ((1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")


def _ogg_last_granule_maxed(data: bytearray) -> None:
    last = list(_ogg_pages(data))[-1][0]
    data[last + 6 : last + 14] = (2**63 - 1).to_bytes(8, "little")
    fix_ogg_crcs(data)


HUGE: dict[str, tuple[str, Callable[[bytearray], None]]] = {
    "wav-data-0x7fffffff": (
        "wav_44k_stereo16",
        lambda d: _put32(d, d.find(b"data") + 4, 2**31 - 1),
    ),
    "wav-riff-and-data-0xffffffff": (
        "wav_44k_stereo16",
        lambda d: (_put32(d, 4, 2**32 - 1), _put32(d, d.find(b"data") + 4, 2**32 - 1)),
    ),
    "flac-total-samples-2^36-1": ("flac_44k_stereo", _flac_total_samples_maxed),
    "mp3-xing-frames-0xffffffff": (
        "mp3_44k_stereo",
        lambda d: _put32(d, d.find(b"Xing") + 8, 2**32 - 1, big=True),
    ),
    "ogg-last-granule-2^63-1": ("ogg_44k_stereo", _ogg_last_granule_maxed),
    "m4a-duration-0x7fffffff": (
        "m4a_44k_stereo",
        lambda d: _put32(d, d.find(b"mdhd") + 20, 2**31 - 1, big=True),
    ),
}


def _edited(source: Path, folder: Path, name: str, edit: Callable[[bytearray], None]) -> Path:
    data = bytearray(source.read_bytes())
    edit(data)
    path = folder / f"{name}{source.suffix}"
    path.write_bytes(data)
    return path


def test_huge_declared_lengths_keep_memory_bounded(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    """Headers claiming hours (or 2^63 samples) of audio: no allocation by the claimed length,
    memory bounded while streaming a long file, and training crops still come from real audio."""
    short = {n: _edited(sources[s], tmp_path, n, edit) for n, (s, edit) in HUGE.items()}
    # A 10-minute 48 kHz stereo WAV claiming 0x7FFFFFFF bytes: 230 MB as native float32.
    tone = np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000).astype(np.float32) * 0.3
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, np.tile(np.stack([tone, tone], 1), (600, 1)), 48_000, subtype="PCM_16")
    long_wav = _edited(
        long_wav, tmp_path, "long-wav-data-0x7fffffff", HUGE["wav-data-0x7fffffff"][1]
    )

    runner = DecodeRunner(tmp_path, workers=1, timeout=30.0, memory_limit=1 << 30)
    outcomes = runner.run(list(short.values()))
    cases = [Case(p, n, n) for n, p in short.items()]
    assert not _problems(cases, outcomes)
    for name, outcome in zip(short, outcomes, strict=True):
        crop = outcome.report["ops"]["crop"]
        # a crop past the real end comes from the audio that is there (FLAC: refused, a clear error)
        assert crop["result"] == "decode-error" or crop["samples"] == 16_000, (name, crop)
    [streamed] = runner.run([long_wav], ops=["stream"])
    report = streamed.report
    assert report["ops"]["stream"]["result"] == "ok", report
    assert report["ops"]["stream"]["samples"] == 600 * 16_000
    assert report["peak_mb"] - report["peak_mb_before"] < 64, report


# -- regressions: what fuzzing found --------------------------------------------------------------
def _wav_rate_1_hz(data: bytearray) -> None:
    _put32(data, data.find(b"fmt ") + 12, 1)


def _vorbis_channels(count: int) -> Callable[[bytearray], None]:
    def edit(data: bytearray) -> None:
        data[data.find(b"\x01vorbis") + 11] = count
        fix_ogg_crcs(data)

    return edit


def _vorbis_setup_bit_flip(data: bytearray) -> None:
    data[334] ^= 1  # inside the setup header (codebooks), under a recomputed page CRC
    fix_ogg_crcs(data)


@pytest.mark.parametrize(
    ("source", "edit", "ops", "reason"),
    [
        # upsampled 16,000-fold: gigabytes per block, minutes of soxr
        ("wav_16k_monofloat", _wav_rate_1_hz, None, "implausible sample rate"),
        # libvorbis decoding 255 channels: seconds per second of audio
        ("ogg_32k_mono", _vorbis_channels(255), None, "implausible channel count"),
        # planar frames: PyAV's to_ndarray read past the 8 planes of an AVFrame (segfault)
        ("ogg_32k_mono", _vorbis_channels(12), ["ffmpeg"], None),
        # libsndfile 1.2.2 segfaulted in sf_seek (crops, segments); whole decodes were fine
        ("ogg_44k_stereo", _vorbis_setup_bit_flip, ["segment", "crop"], None),
    ],
    ids=["wav-1Hz", "vorbis-255ch", "vorbis-12ch-ffmpeg", "vorbis-damaged-setup-seek"],
)
def test_fuzzing_finds_stay_fixed(
    tmp_path: Path,
    sources: dict[str, Path],
    source: str,
    edit: Callable[[bytearray], None],
    ops: list[str] | None,
    reason: str | None,
) -> None:
    path = _edited(sources[source], tmp_path, "damaged", edit)
    [outcome] = DecodeRunner(tmp_path, workers=1).run([path], ops=ops)
    assert outcome.status == "done", outcome.detail
    for result in outcome.report["ops"].values():
        assert result["result"] in ("ok", "decode-error"), result
        assert result["seconds"] < 1.0
        if reason is not None:
            assert result["result"] == "decode-error" and reason in result["detail"], result


def test_truncated_mp3_crops_come_from_the_audio_that_is_there(tmp_path: Path) -> None:
    """A cut-off download keeps its Xing header (10 s): crops past the cut were empty (silence)."""
    path = tmp_path / "cut.mp3"
    t = np.arange(10 * 44_100) / 44_100
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44_100, format="MP3")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 4 // 10])
    assert audio.info(path).duration > 9.9  # the header still says 10 s
    whole = audio.decode(path)
    crop = audio.random_crop(path, 16_000, 2.0, 0.9)
    start = round(0.9 * (len(whole) - 32_000))
    np.testing.assert_array_equal(crop, whole[start : start + 32_000])
    assert np.sqrt(np.mean(crop**2)) > 0.1


# -- the runner itself ----------------------------------------------------------------------------
FAKE_WORKER = """
import json, os, signal, sys, time
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    path = json.loads(line)["path"]
    name = os.path.basename(path)
    if "crash" in name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "hang" in name:
        time.sleep(60)
    ops = {"decode": {"result": "ok", "samples": 1, "seconds": 0.0}}
    print(json.dumps({"path": path, "ops": ops, "peak_mb_before": 1, "peak_mb": 1}), flush=True)
"""


def test_runner_names_a_crash_and_a_hang_and_goes_on(tmp_path: Path) -> None:
    script = tmp_path / "fake_worker.py"
    script.write_text(textwrap.dedent(FAKE_WORKER))
    paths = [tmp_path / n for n in ["a.wav", "crash.wav", "b.wav", "hang.wav", "c.wav", "d.wav"]]
    outcomes = DecodeRunner(tmp_path, workers=2, timeout=1.0, script=script).run(paths)
    assert [o.status for o in outcomes] == ["done", "crash", "done", "hang", "done", "done"]
    assert "exit code -11" in outcomes[1].detail and outcomes[1].path.endswith("crash.wav")
