"""``torch.compile`` against eager for ``tag``'s forward on this CPU: is it worth an option?

    python benchmarks/compile.py [--windows 8] [--threads 1] [--repeats 20]

For the default CRNN (TaggingTask's defaults, 10 s windows) and musicnn's network (the trunk of
``musicnn-msd``, 3 s windows), random weights (speed does not depend on them), each precision
that runs fast here (fp32, and bf16 where ``--precision auto`` picks it): the network as ``tag``
runs it (genretag.inference.for_inference), eager and through ``torch.compile`` (inductor, which
fuses the activations and pooling into the convolutions' epilogues where it can). Reports the
first call's time (compilation), then median x realtime of ``--repeats`` interleaved runs after
3 warm-up rounds, and the largest probability difference of the compiled network from the eager
one. Prints one JSON object with the CPU's flags, then a one-line summary starting with ``#``.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time

import torch

# benchmarks/ is on the path when run as a script
from musicnn_trunks import cpu, forward_args, network, timed

from genretag.inference import for_inference
from genretag.network import Network
from genretag.pretrained.musicnn import LAYOUTS, WINDOW_SECONDS
from genretag.system import choose_precision


def models() -> dict[str, tuple[Network, float]]:
    """name: (network in eval mode, window seconds)."""
    torch.manual_seed(0)
    crnn = Network(labels=[f"genre{i:02d}" for i in range(16)], window_seconds=10.0).eval()
    return {"default": (crnn, 10.0), "musicnn": (network(LAYOUTS["musicnn"].trunk), WINDOW_SECONDS)}


def main() -> int:
    args = forward_args(__doc__)
    cpu_device = torch.device("cpu")
    precisions = sorted({"fp32", choose_precision(cpu_device)})
    load = [os.getloadavg()]
    result: dict = {}
    runs = {}
    for name, (net, window) in models().items():
        audio = torch.randn(args.windows, round(window * 16_000)) * 0.1
        for precision in precisions:
            eager = for_inference(copy.deepcopy(net), cpu_device, precision)
            compiled = torch.compile(for_inference(copy.deepcopy(net), cpu_device, precision))
            with torch.inference_mode():
                start = time.perf_counter()
                fast = compiled(audio)
                first = time.perf_counter() - start
                slow = eager(audio)
            key = f"{name}/{precision}"
            result[key] = {
                "audio_s": args.windows * window,
                "compile_s": round(first, 1),
                "max_abs_prob_diff": float((fast.sigmoid() - slow.sigmoid()).abs().max()),
            }
            runs[key, "eager"] = lambda m=eager, x=audio: m(x)
            runs[key, "compiled"] = lambda m=compiled, x=audio: m(x)
    for (key, engine), times in timed(runs, args.repeats).items():
        result[key][engine] = round(result[key]["audio_s"] / statistics.median(times), 1)
    for entry in result.values():
        entry["compiled_vs_eager"] = round(entry["compiled"] / entry["eager"], 2)
    load.append(os.getloadavg())
    result = {"benchmark": "compile", "windows": args.windows, "threads": args.threads,
              "torch": torch.__version__, "cpu": cpu(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "loadavg_before_after": [list(map(float, x)) for x in load], "runs": result}  # fmt: skip
    print(json.dumps(result, indent=1))
    print("# x realtime, eager -> compiled: " + "; ".join(
        f"{key} {r['eager']} -> {r['compiled']} ({r['compiled_vs_eager']}x, compile {r['compile_s']} s)"
        for key, r in result["runs"].items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
