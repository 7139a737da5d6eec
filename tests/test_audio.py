"""The decoder: crops equal the same span of a full decode, every format, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genretag.data import audio, libopus, sources


def _music(seconds: float, sr: int, channels: int, seed: int = 0) -> np.ndarray:
    """Tonal content with onsets: the kind of signal where MP3 frame handling shows."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2
    x += 0.05 * rng.standard_normal(len(t)) * (np.mod(t, 0.5) < 0.05)
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("sr", "channels", "fmt", "ext"),
    [(44_100, 2, "MP3", "mp3"), (48_000, 1, "MP3", "mp3"), (22_050, 2, "MP3", "mp3"),
     (44_100, 2, "FLAC", "flac"), (32_000, 1, "OGG", "ogg"), (8_000, 2, "WAV", "wav")],
)  # fmt: skip
def test_crops_equal_the_same_span_of_a_full_decode(
    tmp_path: Path, sr: int, channels: int, fmt: str, ext: str
):
    path = tmp_path / f"clip.{ext}"
    sf.write(path, _music(12.0, sr, channels), sr, format=fmt)
    full = audio.decode(path, sr=sr)  # native rate: no resampling in the comparison
    assert abs(len(full) - 12 * sr) <= 1152 * 2
    for offset in [0.0, 0.5, 3.33, 7.777, 10.0]:
        crop = audio.decode(path, sr=sr, offset=offset, duration=1.5)
        start = round(offset * sr)
        assert len(crop) == round(1.5 * sr)
        np.testing.assert_allclose(
            crop, full[start : start + len(crop)], atol=1e-6, err_msg=f"offset {offset}"
        )


def test_resampled_crop_matches_full_decode_away_from_edges(tmp_path: Path):
    path = tmp_path / "clip.mp3"
    sf.write(path, _music(10.0, 44_100, 2), 44_100, format="MP3")
    full = audio.decode(path)  # 16 kHz mono
    assert full.dtype == np.float32 and full.ndim == 1
    assert abs(len(full) - 160_000) < 100
    crop = audio.random_crop(path, 16_000, 3.0, 0.5)
    start = round(0.5 * (441_000 - 3 * 44_100) * 16_000 / 44_100)
    assert len(crop) == 48_000
    # the resampler's filter sees different context at the crop's edges only
    np.testing.assert_allclose(crop[200:-200], full[start + 200 : start + 48_000 - 200], atol=2e-3)


def test_short_file_gives_what_it_has_and_stream_is_bounded(tmp_path: Path):
    path = tmp_path / "short.wav"
    sf.write(path, _music(0.2, 44_100, 1), 44_100)
    assert len(audio.random_crop(path, 16_000, 3.0, 0.7)) == 3200
    blocks = list(audio.stream(path, 16_000))
    assert sum(map(len, blocks)) == 3200


def test_pyav_fallback_reads_what_libsndfile_cannot(tmp_path: Path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.m4a"
    sr = 44_100
    x = _music(3.0, sr, 2)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=sr, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x.T), format="fltp", layout="stereo"
        )
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    decoded = audio.decode(path)
    assert abs(len(decoded) - 48_000) < 2048
    crop = audio.decode(path, offset=1.0, duration=1.0)
    assert len(crop) == 16_000
    # a seek lands on the same samples as decoding through (AAC is lossy: compare loosely)
    np.testing.assert_allclose(crop[500:-500], decoded[16_000 + 500 : 32_000 - 500], atol=0.02)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [("missing.mp3", None, "no such file"), ("empty.mp3", b"", "empty file"),
     ("text.flac", b"this is not audio\n" * 50, "unreadable"), ("noise.ogg", bytes(range(256)) * 40, "unreadable")],
)  # fmt: skip
def test_bad_files_raise_one_error_naming_the_file(
    tmp_path: Path, name: str, content: bytes | None, reason: str
):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(audio.AudioDecodeError) as error:
        audio.decode(path)
    assert str(path) in str(error.value) and reason in str(error.value)


def test_truncated_mp3_decodes_what_is_there(tmp_path: Path):
    path = tmp_path / "cut.mp3"
    sf.write(path, _music(6.0, 44_100, 2), 44_100, format="MP3")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        x = audio.decode(path)
    except audio.AudioDecodeError as error:  # acceptable: a clear error
        assert str(path) in str(error)
    else:
        assert 0 < len(x) < 6 * 16_000 and np.isfinite(x).all()


def test_mp3_read_in_many_chunks_equals_one_read_of_the_whole_file(tmp_path: Path, monkeypatch):
    """Every chunk after the first is re-read from a pre-rolled seek: no glitch at the seams."""
    path = tmp_path / "long.mp3"
    sf.write(path, _music(12.0, 44_100, 2), 44_100, format="MP3")
    with sf.SoundFile(path) as f:
        whole = f.read(dtype="float32", always_2d=True).mean(axis=1, dtype=np.float32)
    monkeypatch.setattr(sources, "CHUNK_SAMPLES", 2 * (5 * 1152 + 321))  # ~40 chunks
    blocks = list(audio.stream(path, sr=44_100))
    assert len(blocks) > 30
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    crop = audio.decode(path, sr=44_100, offset=4.321, duration=3.0)
    start = round(4.321 * 44_100)
    np.testing.assert_array_equal(crop, whole[start : start + len(crop)])


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_downmix_is_bit_identical_to_the_channel_mean(channels: int):
    block = np.random.default_rng(channels).standard_normal((10_001, channels)).astype(np.float32)
    np.testing.assert_array_equal(sources.downmix(block), block.mean(axis=1, dtype=np.float32))


def _libsndfile_only(monkeypatch, read, *args, **kwargs) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(libopus, "library", lambda: None)
        return read(*args, **kwargs)


@pytest.mark.parametrize("channels", [1, 2])
def test_opus_from_its_start_takes_libopus_with_libsndfiles_samples(
    tmp_path: Path, monkeypatch, channels: int
):
    """``tag`` streams Opus through libopus directly; training crops seek with libsndfile: both
    must see the same samples, the same length, in every way a file is read."""
    path = tmp_path / "track.opus"
    sf.write(path, _music(7.0, 48_000, channels), 48_000, format="OGG", subtype="OPUS")
    taken, real = [], sources.opus_frames

    def spy(*args):
        blocks = real(*args)
        taken.extend([args] if blocks is not None else [])
        return blocks

    monkeypatch.setattr(sources, "opus_frames", spy)
    reads = [
        (audio.decode, path),
        (audio.decode, path, 48_000),
        (lambda p: np.concatenate(list(audio.stream(p))), path),
        (audio.random_crop, path, 16_000, 3.0, 0.0),  # a crop at 0 takes the fast path too
        (audio.random_crop, path, 16_000, 3.0, 0.5),  # a seek: libsndfile only
    ]
    for read, *args in reads:
        fast, reference = read(*args), _libsndfile_only(monkeypatch, read, *args)
        assert len(fast) == len(reference) > 0, args
        np.testing.assert_allclose(fast, reference, atol=1e-6, err_msg=str(args))
    assert len(taken) == 4, "the fast path was not used"
    assert len(audio.decode(path)) == 7 * 16_000


def test_opus_hands_over_to_libsndfile_where_the_fast_path_stops(tmp_path: Path, monkeypatch):
    """A packet libopus rejects (or a demuxer error) mid-file: libsndfile decodes the rest from
    that sample on, so the file still decodes whole and seamlessly; and where no libopus can be
    loaded, libsndfile decodes it all."""
    path = tmp_path / "track.opus"
    sf.write(path, _music(7.0, 48_000, 2), 48_000, format="OGG", subtype="OPUS")
    reference = _libsndfile_only(monkeypatch, audio.decode, path, sr=48_000)
    real = sources.opus_frames

    def stops_after_one_block(*args):
        blocks = real(*args)
        yield next(blocks)
        blocks.close()
        raise ValueError("libopus: corrupted stream")

    monkeypatch.setattr(sources, "opus_frames", stops_after_one_block)
    handed_over = audio.decode(path, sr=48_000)
    assert len(handed_over) == len(reference)
    np.testing.assert_allclose(handed_over, reference, atol=1e-6)

    monkeypatch.setattr(sources, "opus_frames", real)
    monkeypatch.setattr(libopus, "library", lambda: None)
    assert sources.opus_frames(str(path), 2, 48_000) is None
    np.testing.assert_array_equal(audio.decode(path, sr=48_000), reference)


def test_opus_made_from_16_khz_audio_keeps_its_pitch(tmp_path: Path, monkeypatch):
    """libsndfile decodes an Opus file made from 16 kHz audio at 16 kHz (the header's input
    rate): the fast path must decode at that rate too, not at 48 kHz (3x too slow, pitch down)."""
    path = tmp_path / "voice.opus"
    t = np.arange(3 * 16_000) / 16_000
    sf.write(path, np.sin(2 * np.pi * 440 * t).astype(np.float32) * 0.3, 16_000, format="OGG",
             subtype="OPUS")  # fmt: skip
    x = audio.decode(path)
    np.testing.assert_allclose(x, _libsndfile_only(monkeypatch, audio.decode, path), atol=1e-6)
    spectrum = np.abs(np.fft.rfft(x[8_000:40_000]))
    assert np.argmax(spectrum) * 16_000 / 32_000 == pytest.approx(440, abs=1)


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ (0x04C11DB7 if crc & 0x80000000 else 0)
            crc &= 0xFFFFFFFF
    return crc


def test_opus_output_gain_is_applied_as_libsndfile_does(tmp_path: Path, monkeypatch):
    """ReplayGain tools (rsgain, loudgain) write the loudness correction into the OpusHead's
    output gain; every decoder must apply it."""
    path = tmp_path / "normalised.opus"
    sf.write(path, _music(3.0, 48_000, 2), 48_000, format="OGG", subtype="OPUS")
    plain = audio.decode(path)
    data = bytearray(path.read_bytes())  # the first Ogg page holds the OpusHead packet alone
    segments = data[26]
    head, end = 27 + segments, 27 + segments + sum(data[27 : 27 + segments])
    assert data[head : head + 8] == b"OpusHead"
    data[head + 16 : head + 18] = (-6 * 256).to_bytes(2, "little", signed=True)  # -6 dB, Q7.8
    data[22:26] = bytes(4)
    data[22:26] = _ogg_crc(bytes(data[:end])).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    quieter = audio.decode(path)
    np.testing.assert_allclose(
        quieter, _libsndfile_only(monkeypatch, audio.decode, path), atol=1e-6
    )
    assert np.abs(quieter).max() / np.abs(plain).max() == pytest.approx(10 ** (-6 / 20), rel=1e-4)
