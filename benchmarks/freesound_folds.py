"""Train the K folds of a Freesound config, then test (and optionally predict) their ensemble.

    python benchmarks/freesound_folds.py --config configs/freesound.yaml --folds 5 \
        [--combine geometric] [--predict] [-- --data.root data/FSDKaggle2018 --data.trusted t.csv]

Fold i runs ``genretag fit --config CONFIG --data.folds K --data.fold i`` (fold i's verified
clips validate, the rest train; ``--data.seed`` fixes the folds) into
``lightning_logs/folds/fold_i``; then ``genretag test --model.ensemble [best_0, ..., best_K-1]``
scores the K best checkpoints averaged (arithmetic by default) on the test split, and with
``--predict`` ``genretag predict`` writes the ensemble's Kaggle submission. Arguments after
``--`` go to every command. A fold whose best.ckpt exists is not trained again (re-run after a
kill to continue). Prints one JSON object: the checkpoints and the ensemble's test metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genretag.cli import lightning_cli


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--combine", choices=("arithmetic", "geometric"), default="arithmetic")
    p.add_argument("--logs", type=Path, default=Path("lightning_logs/folds"))
    p.add_argument("--predict", action="store_true", help="also write the ensemble's submission")
    args = p.parse_args(argv)
    best = []
    for i in range(args.folds):
        folder = args.logs / f"fold_{i}"
        found = sorted(folder.rglob("best.ckpt"))
        if not found:
            lightning_cli(
                ["fit", "--config", args.config, f"--data.folds={args.folds}",
                 f"--data.fold={i}", f"--trainer.default_root_dir={folder}", *extra]
            )  # fmt: skip
            found = sorted(folder.rglob("best.ckpt"))
        best.append(str(found[-1]))
    members = [f"--model.ensemble=[{','.join(best)}]", f"--model.ensemble_combine={args.combine}"]
    common = ["--config", args.config, f"--trainer.default_root_dir={args.logs / 'ensemble'}"]
    cli = lightning_cli(["test", *common, *members, *extra])
    metrics = {
        k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")
    }
    if args.predict:
        lightning_cli(["predict", *common, *members, *extra])
    print(json.dumps({"checkpoints": best, "combine": args.combine, "test": metrics}, indent=1))


if __name__ == "__main__":
    main()
