"""CI's dry run of the GPU check: benchmarks/device_check.py --cpu --quick writes every section.

The script is run on a GPU machine by hand (its docstring gives the command); here it must run
to the end on a CPU and give numbers for every part, so that the one prepared run there does
not fail on a typo. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_dry_run_on_cpu(tmp_path: Path):
    out = tmp_path / "device_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--cpu", "--quick",
         "--out", str(out)],
        capture_output=True, text=True, timeout=420, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].startswith("# device check: ")
    result = json.loads(out.read_text())
    parts = ["env", "corpus", "gpu_tests", "demo_fit", "train_step", "loader", "cache_epoch",
             "tagging"]  # fmt: skip
    for part in parts:
        assert "error" not in result[part], (part, result[part].get("error"))
        assert result[part]["seconds"] >= 0
    env_ = result["env"]
    assert env_["cuda_available"] is False and env_["missing"] == [] and env_["cpu_count"] >= 1
    assert result["corpus"]["tracks"] == 8 and result["corpus"]["epoch_tracks"] == 12
    tests = result["gpu_tests"]
    assert tests["returncode"] == 0 and tests["skipped"] == 3 and tests["failed"] == 0
    assert 0.0 <= result["demo_fit"]["best_val_roc_auc"] <= 1.0
    assert Path(result["demo_fit"]["checkpoint"]).name.endswith(".ckpt")
    assert result["demo_fit"]["epochs"] == 1
    (variant,) = result["train_step"]["variants"].values()
    assert variant["clips_per_s"] > 0 and 0 < variant["frontend_share"] < 1
    workers = result["loader"]["workers"]
    assert set(workers) == {"1", "2"} and all(w["clips_per_s"] > 0 for w in workers.values())
    assert workers["1"]["efficiency"] == 1.0 and workers["2"]["efficiency"] > 0
    epoch = result["cache_epoch"]
    assert epoch["stream_train_s"] > 0 and epoch["cache_train_s"] > 0 and epoch["speedup"] > 0
    assert "decoded" in epoch["prepare"]
    tagging = result["tagging"]
    assert tagging["checkpoint"] == "demo_fit" and tagging["files"] == 8
    assert tagging["x_realtime"] > 0
