"""Every benchmark runs in quick mode and prints one JSON object and a one-line summary.

No timing is asserted (CI machines differ); the figures must be there and be numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _run(name: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines[-1].startswith("# "), lines[-1]
    return json.loads(lines[-2])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_prints_json(name: str):
    result = _run(name)
    assert result["benchmark"] == name and result["quick"] is True
    for key in EXPECTED[name]:
        assert key in result, key
    if name == "decode":
        main = result["formats"]["44k_stereo"]
        assert (
            main["crop_10s"]["per_core_per_s"] > 0
            and main["librosa_full_load"]["per_core_per_s"] > 0
        )
        assert main["check"]["native_crop_vs_full_max_abs"] < 1e-6  # the decoder is sample-exact
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
