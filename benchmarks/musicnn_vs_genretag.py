"""The same weights, two programs: a musicnn model through ``genretag tag`` and musicnn's own.

    python benchmarks/musicnn_vs_genretag.py FILE_OR_FOLDER ... \
        [--musicnn-python /work/venv-musicnn-ref/bin/python] [--n 12] \
        [--model MSD_musicnn|MTT_musicnn|MSD_vgg|MTT_vgg] [--precision auto|fp32|bf16] [--workers N]

On the same real files in the same run, in this order: ``genretag tag --ckpt musicnn-msd`` (the
``--model``'s genretag name: ``musicnn-msd-vgg`` for MSD_vgg ...; ``--precision`` as given)
(in-process, the checkpoint converted beforehand; ``--workers`` as given, else tag's own default:
one decoding process per two cores, the rest run the network), musicnn's ``extractor`` (what its
``top_tags`` runs; in its own TensorFlow virtualenv, see benchmarks/musicnn_reference.py, by
subprocess: this file with ``--musicnn-worker``), then ``genretag tag`` again. A file's musicnn
scores are its taggram's mean over patches, as ``top_tags`` ranks them.

Prints one JSON object: audio seconds; for each program the wall seconds and x realtime (musicnn:
the sum of its per-file calls, TensorFlow's import apart; genretag: the command's wall time,
torch imported beforehand, both runs); the speed ratio; the top-3 agreement per file (same set,
same order) and its rate; the largest and mean absolute probability difference; and the same
agreement for genretag's network on musicnn's own patch grid (``same_patches``: the whole file's
log-mel cut into 187-frame patches from frame 0, the tail dropped, as musicnn does), which
separates the window scheme from the port. Load average and CPU capability beside the figures.
"""

from __future__ import annotations

import json
import os
import sys
import time

if "--musicnn-worker" in sys.argv:  # in musicnn's virtualenv: no genretag, no torch
    import numpy as np

    def worker(out: str, model: str, files: list[str]) -> None:
        start = time.perf_counter()
        from musicnn import extractor

        imported = time.perf_counter() - start
        rows = {}
        for path in files:
            t0, c0 = time.perf_counter(), time.process_time()
            taggram, _ = extractor.extractor(path, model=model, extract_features=False)
            rows[path] = {
                "scores": np.asarray(taggram).mean(0).tolist(),
                "wall_s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0,
                "patches": len(taggram),
            }
        with open(out, "w") as f:
            json.dump({"import_s": imported, "files": rows}, f)

    i = sys.argv.index("--musicnn-worker")
    worker(sys.argv[i + 1], sys.argv[i + 2], sys.argv[i + 3 :])
    sys.exit(0)

import argparse  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from genretag.cli import main as genretag_main  # noqa: E402
from genretag.data.audio import decode, info  # noqa: E402
from genretag.pretrained.musicnn import MODELS, model_name, resolve_checkpoint  # noqa: E402
from genretag.tagger.scan import scan  # noqa: E402

PATCH = 187 * 256


def run_genretag(
    files: list[Path], ckpt: str, out: Path, labels: list[str], precision: str, workers: int | None
) -> tuple[float, dict, dict]:
    """Wall seconds of ``genretag tag``, {path: scores (50,)} and {path: genres} from its table."""
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    code = genretag_main(["tag", *map(str, files), "--ckpt", ckpt, "--out", str(out),
                          "--top-k", "50", "--precision", precision,
                          *([] if workers is None else ["--workers", str(workers)])])  # fmt: skip
    wall = time.perf_counter() - start
    assert code == 0, f"genretag tag exited with {code}"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = [str(Path(r["path"]).resolve()) for r in rows]
    scores = {
        k: np.array([r["scores"][t] for t in labels]) for k, r in zip(keys, rows, strict=True)
    }
    return (
        wall,
        scores,
        {k: [g["label"] for g in r["genres"]] for k, r in zip(keys, rows, strict=True)},
    )


def same_patches(files: list[Path], ckpt: str) -> dict[str, np.ndarray]:
    """Our network on musicnn's patch grid: whole-file log-mel, 187-frame patches, tail dropped."""
    from genretag.network import Network

    model = Network.load(ckpt)
    out = {}
    with torch.inference_mode():
        for path in files:
            audio = torch.from_numpy(decode(path, 16_000).astype(np.float32))[None]
            mel = model.frontend(audio)[0]
            # musicnn: range(0, frames - 187 + 1, 187) over frames = ours + 1 (see MusicnnMel)
            n = min(len(range(0, mel.shape[1] + 1 - 186, 187)), mel.shape[1] // 187)
            patches = mel[:, : n * 187].reshape(96, n, 187).permute(1, 0, 2)
            probs = model.head.probabilities(model.head(model.trunk(patches)))
            out[str(path.resolve())] = probs.mean(0).numpy()
    return out


def top3(scores: np.ndarray, labels: list[str]) -> list[str]:
    return [labels[i] for i in np.argsort(-scores, kind="stable")[:3]]


def agreement(
    ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], labels: list[str]
) -> dict:
    same_set = same_order = 0
    diffs = []
    for path, t in theirs.items():
        o = ours[path]
        same_set += set(top3(o, labels)) == set(top3(t, labels))
        same_order += top3(o, labels) == top3(t, labels)
        diffs.append(np.abs(o - t))
    diffs = np.stack(diffs)
    return {
        "top3_same_set": same_set / len(theirs),
        "top3_same_order": same_order / len(theirs),
        "max_abs_prob_diff": round(float(diffs.max()), 5),
        "mean_abs_prob_diff": round(float(diffs.mean()), 6),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--musicnn-python", default="/work/venv-musicnn-ref/bin/python")
    parser.add_argument("--n", type=int, default=12, help="files at most (evenly over inputs)")
    parser.add_argument("--model", default="MSD_musicnn", choices=[m[0] for m in MODELS.values()])
    parser.add_argument("--precision", default="auto", help="genretag tag --precision")
    parser.add_argument("--workers", type=int, help="genretag tag --workers (default: its own)")
    args = parser.parse_args()
    labels = MODELS[model_name(args.model)][1]
    files = [p.resolve() for p in scan(args.inputs)]
    files = [files[i] for i in np.linspace(0, len(files) - 1, min(args.n, len(files))).astype(int)]
    seconds = sum(info(p).duration for p in files)
    ckpt = resolve_checkpoint(f"musicnn-{model_name(args.model)}")  # converted once, untimed
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        wall_a, ours, genres = run_genretag(files, ckpt, Path(tmp) / "a.jsonl", labels,
                                            args.precision, args.workers)  # fmt: skip
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        start = time.perf_counter()
        subprocess.run([args.musicnn_python, __file__, "--musicnn-worker", f"{tmp}/m.json",
                        args.model, *map(str, files)], check=True, env=env,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        musicnn_process = time.perf_counter() - start
        theirs_raw = json.loads(Path(f"{tmp}/m.json").read_text())
        wall_b, _, _ = run_genretag(
            files, ckpt, Path(tmp) / "b.jsonl", labels, args.precision, args.workers
        )
    load.append(os.getloadavg())
    theirs = {p: np.array(r["scores"]) for p, r in theirs_raw["files"].items()}
    musicnn_wall = sum(r["wall_s"] for r in theirs_raw["files"].values())
    ours_wall = (wall_a + wall_b) / 2
    grid = same_patches(files, ckpt)
    result = {
        "model": args.model,
        "precision": args.precision,
        "workers": args.workers,
        "files": len(files),
        "audio_s": round(seconds, 1),
        "genretag": {
            "wall_s": [round(wall_a, 2), round(wall_b, 2)],
            "x_realtime": round(seconds / ours_wall, 1),
        },  # fmt: skip
        "musicnn": {
            "wall_s": round(musicnn_wall, 2),
            "x_realtime": round(seconds / musicnn_wall, 1),
            "tf_import_s": round(theirs_raw["import_s"], 2),
            "process_s": round(musicnn_process, 2),
        },  # fmt: skip
        "speedup": round(musicnn_wall / ours_wall, 2),
        "agreement": agreement(ours, theirs, labels),
        "same_patches": agreement(grid, theirs, labels),
        "per_file": {
            f"{Path(p).parent.name}/{Path(p).name}": {
                "genretag_top3": top3(ours[p], labels),
                "musicnn_top3": top3(theirs[p], labels),
                "genres": genres[p],
            }  # fmt: skip
            for p in theirs
        },
        "loadavg_before_after": [list(map(float, x)) for x in load],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    a = result["agreement"]
    print(f"# genretag {result['genretag']['x_realtime']}x vs musicnn "
          f"{result['musicnn']['x_realtime']}x realtime ({result['speedup']}x); top-3 same set "
          f"{a['top3_same_set']:.0%}, largest difference {a['max_abs_prob_diff']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
