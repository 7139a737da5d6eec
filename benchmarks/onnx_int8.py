"""ONNX Runtime with static int8 (QDQ) against torch for the network ``tag`` runs, on this CPU.

    pip install onnxruntime onnx onnxscript
    python benchmarks/onnx_int8.py FOLDER [--calibrate 4] [--threads 1] [--repeats 10]

Issue 22's candidate engine, measured before any code depends on it. For each ``--ckpt`` (default:
musicnn's published MSD network; trained weights, so agreement means something) and the default
CRNN (random weights: speed only), the trunk and head after the log-mel front-end (which stays in torch) are exported
to ONNX from the network as ``tag`` runs it in fp32 (genretag.inference.for_inference) and
quantized statically by onnxruntime.quantization (QDQ, per-channel int8 weights, uint8
activations), calibrated on the log-mel windows of the first ``--calibrate`` files of FOLDER (as
a user's own first files would calibrate it). The other files are the test set: per file, the
mean of its windows' probabilities, compared with torch fp32 (top-1 equal, largest difference).
Speed: 8 windows per batch, ``--threads`` threads, median of ``--repeats`` interleaved runs, x
realtime, for torch fp32, torch at ``--precision auto``'s choice here, ORT fp32 and ORT int8.
Prints one JSON object with the CPU's flags, then a one-line summary starting with ``#``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from musicnn_trunks import cpu, timed  # benchmarks/ is on the path when run as a script

from genretag.data import audio as audio_io
from genretag.inference import for_inference
from genretag.network import Network
from genretag.system import choose_precision, keep_freed_memory
from genretag.tagger import scan
from genretag.windows import windows


def log_mels(net: Network, path: str) -> torch.Tensor:
    """The log-mel of each window ``tag`` scores in one file (n, mels, frames)."""
    cut = windows(audio_io.decode(path, net.sample_rate), net.window, mode=net.pad_mode)
    with torch.no_grad():  # not inference_mode: the ONNX export traces these tensors
        return net.frontend(torch.from_numpy(cut))


class Body(torch.nn.Module):
    """Log-mel (B, mels, frames) -> probabilities (B, C): the part ONNX Runtime runs."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.net.probabilities(self.net.head(self.net.trunk(spec)))


def torch_runner(body: Body):
    def run(spec: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return body(spec).numpy()

    return run


def ort_runner(session):
    return lambda spec: session.run(None, {"spec": spec.numpy()})[0]


def ort_sessions(body: Body, calibration: list[torch.Tensor], threads: int, tmp: Path) -> dict:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    fp32, pre, int8 = tmp / "fp32.onnx", tmp / "pre.onnx", tmp / "int8.onnx"
    with contextlib.redirect_stdout(sys.stderr):  # the exporter's progress: stdout is the JSON
        torch.onnx.export(body, (calibration[0][:8],), str(fp32), input_names=["spec"],
                          output_names=["p"], dynamic_axes={"spec": {0: "b"}, "p": {0: "b"}},
                          dynamo=True, external_data=False)  # fmt: skip
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"spec": w[None].numpy()} for spec in calibration for w in spec])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in (("ort_fp32", fp32), ("ort_int8", int8))}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--ckpt", nargs="+", default=["musicnn-msd"], help="trained models")
    parser.add_argument("--calibrate", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # As `tag` runs the model (genretag.system.inference_threads): without it torch's forward
    # maps and faults its 100+ MB of activations in again on every batch, which made ORT look
    # 1.5x faster in fp32 than torch on an AVX2 EPYC, against 1.0x with it.
    kept = keep_freed_memory()
    files = [str(f) for f in scan.scan([str(args.folder)])]
    auto = choose_precision(torch.device("cpu"))
    torch.manual_seed(0)
    nets = {Path(ckpt).name: Network.load(ckpt) for ckpt in args.ckpt}
    nets["default (random weights)"] = Network(
        labels=[f"genre{i:02d}" for i in range(16)], window_seconds=10.0
    ).eval()
    load = [os.getloadavg()]
    result: dict = {}
    runs = {}
    for name, net in nets.items():
        specs = [log_mels(net, f) for f in files]
        calibration, test = specs[: args.calibrate], specs[args.calibrate :]
        engines = {f"torch_{p}": Body(for_inference(copy.deepcopy(net), torch.device("cpu"), p))
                   for p in dict.fromkeys(("fp32", auto))}  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            sessions = ort_sessions(engines["torch_fp32"], calibration, args.threads, Path(tmp))

        engines_all = {**{e: torch_runner(b) for e, b in engines.items()},
                       **{e: ort_runner(session) for e, session in sessions.items()}}  # fmt: skip
        means = {e: [run(s).mean(0) for s in test] for e, run in engines_all.items()}
        ref = np.stack(means["torch_fp32"])
        batch = torch.cat(test)[:8]
        seconds = len(batch) * net.window_seconds
        result[name] = {"test_files": len(test), "audio_s_per_batch": seconds}
        for engine, scores in means.items():
            scores = np.stack(scores)
            result[name][engine] = {
                "top1_agreement": float((scores.argmax(1) == ref.argmax(1)).mean()),
                "max_abs_prob_diff": round(float(np.abs(scores - ref).max()), 5),
            }
            runs[name, engine] = lambda run=engines_all[engine], x=batch: run(x)
    for (name, engine), times in timed(runs, args.repeats).items():
        speed = result[name]["audio_s_per_batch"] / statistics.median(times)
        result[name][engine]["x_realtime"] = round(speed, 1)
    load.append(os.getloadavg())
    import onnxruntime

    print(json.dumps({"benchmark": "onnx_int8", "files": len(files), "threads": args.threads,
                      "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                      "keep_freed_memory": kept,
                      "cpu": cpu(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "loadavg_before_after": [list(map(float, x)) for x in load],
                      "models": result}, indent=1))  # fmt: skip
    print("# x realtime (top-1 agreement with torch fp32): " + "; ".join(
        f"{name} " + ", ".join(f"{e} {r['x_realtime']}x ({r['top1_agreement']:.2f})"
                               for e, r in models.items() if isinstance(r, dict))
        for name, models in result.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
