"""Every benchmark runs in quick mode and prints one JSON object and a one-line summary.

No timing is asserted (CI machines differ); the figures must be there and be numbers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
# script -> keys its JSON must have
EXPECTED = {
    "decode": ("formats", "targets"),
    "loader": ("sources", "targets"),
    "frontend": ("devices", "max_abs_error_db_vs_librosa"),
    "step": ("variants", "best"),
    "fit": ("runs", "cached_epoch_speedup"),
    "metadata": ("rows", "cold_s", "cached_s"),
    "tagging": ("throughput", "long_file", "precisions", "corpora", "targets"),
}

# rows each benchmark adds to the README's performance table
README_ROWS = {"decode": 3, "loader": 2, "step": 1}


def _script(name: str, *args: str) -> list[str]:
    """Run benchmarks/NAME.py with ARGS; its non-empty stdout lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [line for line in done.stdout.splitlines() if line.strip()]


def _run(name: str) -> dict:
    lines = _script(name, "--quick")
    assert lines[-1].startswith("# "), lines[-1]
    return json.loads(lines[-2])


def _perf_table(tmp_path: Path, *results: dict) -> str:
    """``readme_tables.py --perf`` on RESULTS saved as files: its Markdown table."""
    files = []
    for i, result in enumerate(results):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(result) + "\n# summary line\n")
    lines = _script("readme_tables", "--perf", *map(str, files))
    assert json.loads(lines[-1])["rows"]
    return "\n".join(lines[:-1])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_prints_json(name: str, tmp_path: Path):
    result = _run(name)
    assert result["benchmark"] == name and result["quick"] is True
    for key in EXPECTED[name]:
        assert key in result, key
    if name == "decode":
        main = result["formats"]["44k_stereo"]
        rates = ("crop_10s", "librosa_offset_crop", "librosa_full_load")
        assert all(main[key]["per_core_per_s"] > 0 for key in rates)
        assert main["crop_10s_vs_librosa_offset"] > 0 and main["crop_10s_vs_librosa_full_load"] > 0
        assert main["check"]["native_crop_vs_full_max_abs"] < 1e-6  # the decoder is sample-exact
    if name == "step":  # timed in a real Trainer: the task's one-cycle schedule stepped each batch
        fp32 = result["variants"]["fp32"]
        assert fp32["scheduler"] == "OneCycleLR" and fp32["scheduler_steps"] == 2
        assert result["model_args"]["mixup_alpha"] == 0.2
        assert result["loop_without_trainer"]["fp32"]["clips_per_s"] > 0
    if name in README_ROWS:  # the README's performance table renders from this very output
        table = _perf_table(tmp_path, result)
        assert table.count("\n") == 1 + README_ROWS[name] and "(quick run)" in table
    if name == "frontend":
        assert max(result["max_abs_error_db_vs_librosa"].values()) < 0.05
    if name == "loader":
        assert set(result["sources"]) == {"stream", "cache"}
        assert all(f["clips_per_s"] > 0 for f in result["sources"]["cache"].values())
    if name == "tagging":
        demo = result["corpora"]["synthetic_mp3"]["demo"]
        assert demo["fp32"]["x_realtime_with_startup_median"] > 0
        assert 0.0 <= demo["int8"]["top1_agreement"] <= 1.0
    if name == "fit":
        assert [len(epochs) for epochs in result["runs"].values()] == [2, 2]
        assert all(e["train_clips"] == 8 for epochs in result["runs"].values() for e in epochs)


def _readme_tables():
    spec = importlib.util.spec_from_file_location(
        "readme_tables", ROOT / "benchmarks" / "readme_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_table_is_the_readme_table():
    table = _readme_tables().results_table(
        {
            "validate": {"roc_auc": 0.91749, "pr_auc": 0.85, "f1": 0.4381},
            "test": {"roc_auc": 0.955, "pr_auc": 0.8651, "f1": 0.6129},
        }
    )
    assert table == (
        "| split | ROC-AUC (macro) | PR-AUC (macro) | F1 (macro) |\n"
        "|---|---|---|---|\n"
        "| validation (best epoch) | **0.917** | 0.850 | 0.438 |\n"
        "| test | **0.955** | 0.865 | 0.613 |"
    )


def test_perf_table_from_benchmark_json(tmp_path: Path):
    crop = {"per_core_per_s": 118.0}
    fmt = {"crop_10s": crop, "crop_3s": {"per_core_per_s": 256.0}, "full_clip": {"per_core_per_s": 43.5},
           "librosa_offset_crop": {"per_core_per_s": 84.3}, "librosa_full_load": {"per_core_per_s": 25.4},
           "crop_10s_vs_librosa_offset": 1.4, "crop_10s_vs_librosa_full_load": 4.65,
           "full_clip_vs_librosa_full_load": 1.71, "check": {"full_16k_vs_librosa_max_abs": 0.0}}  # fmt: skip
    decode = {
        "benchmark": "decode", "quick": False, "file_seconds": 30.0,
        "formats": {"44k_stereo": fmt, "48k_stereo": {"crop_10s": {"per_core_per_s": 114.0}},
                    "44k_mono": {"crop_10s": {"per_core_per_s": 155.0}}},
        "targets": {"crop_10s_per_core_per_s": {"target": 70, "measured": 118.0},
                    "crop_10s_vs_librosa_offset": {"target": 2.0, "measured": 1.4}},
    }  # fmt: skip
    lines = _perf_table(tmp_path, decode).splitlines()
    assert lines[:2] == ["| what (command) | measured | target |", "|---|---|---|"]
    assert lines[2].endswith(
        "| **118.0 /s per core** (48 kHz: 114.0, mono: 155.0); 3 s crops 256.0 /s; "
        "whole clips 43.5 /s | >= 70 /s/core: met |"
    )
    assert lines[3] == (
        "| the same crop vs `librosa.load(path, sr=16000, mono=True, offset=, duration=)` "
        "| **1.4x** (librosa: 84.3 /s) | >= 2x: not met |"
    )
    assert "| 4.65x (librosa: 25.4 /s); whole clips 1.71x;" in lines[4]


def test_real_corpus_splits_by_recording(tmp_path: Path):
    """Soundtrack folders become an FMA corpus that fma reads, each recording in one split."""
    from genretag.data import fma

    rng = np.random.default_rng(0)
    t = np.arange(70 * 8000) / 8000
    for cls, base in (("calm", 220.0), ("loud", 880.0)):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for k in range(3):  # 3 recordings of 70 s: 2 clips each; a 20 s fragment: none
            tone = 0.3 * np.sin(2 * np.pi * base * (1 + k / 10) * t) + 0.01 * rng.standard_normal(
                len(t)
            )
            sf.write(tmp_path / "src" / cls / f"{cls}{k}.ogg", tone, 8000)
        sf.write(tmp_path / "src" / cls / "short.ogg", np.zeros(20 * 8000), 8000)
        sf.write(tmp_path / "src" / cls / f"{cls}0_old.ogg", tone, 8000)  # a second version: --skip
    stems = tmp_path / "src" / "band" / "song"  # a folder = one recording made of its stems
    stems.mkdir(parents=True)
    for name, f in (("song.ogg", 110.0), ("guitar.ogg", 330.0)):
        t = np.arange(40 * 8000) / 8000
        sf.write(stems / name, np.stack([np.sin(2 * np.pi * f * t)] * 2, axis=1) * 0.8, 8000)
    out = tmp_path / "corpus"
    lines = _script(
        "real_corpus", "--out", str(out), "--skip", "*_old.ogg",
        "--class", f"calm={tmp_path}/src/calm/*.ogg", "--class", f"loud:Rock={tmp_path}/src/loud/*.ogg",
        "--class", f"band={tmp_path}/src/band/*/",
    )  # fmt: skip
    result = json.loads(lines[-2])
    tracks = fma.read_tracks(out / "fma_metadata", cache=False)
    assert len(tracks) == 2 * 3 * 2 + 1  # the 20 s fragments give no clip, *_old none
    assert result["classes"]["loud"]["genre"] == "Rock" and set(tracks["genre_top"]) >= {"Rock"}
    recording = tracks["artist"] + "/" + tracks["title"].str.rsplit(" @ ", n=1).str[0]
    assert recording.value_counts().max() == 2
    assert tracks.groupby(recording)["split"].nunique().eq(1).all()  # never in two splits
    assert set(tracks["split"]) == {"training", "validation", "test"}
    info = sf.info(out / "fma_real" / fma.audio_relpath(int(tracks.index[-1])))
    assert (info.samplerate, info.channels, round(info.duration)) == (44_100, 2, 30)
    with pytest.raises(AssertionError, match="already holds a corpus"):
        _script("real_corpus", "--out", str(out), "--class", f"calm={tmp_path}/src/calm/*.ogg")
