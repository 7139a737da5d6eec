"""``genretag compare``: one table of runs from their TensorBoard version folders.

    genretag compare lightning_logs/version_* [--out table.md|table.csv]

Reads each folder's event files (tensorboard's EventAccumulator) and ``hparams.yaml`` (and the
``data`` section of LightningCLI's ``config.yaml`` when there is one), both with yaml.safe_load:
plain data, no checkpoint is opened. Prints, in Markdown, one row per run (trunk, parameters,
window, best validation ROC-AUC with the PR-AUC of that epoch, test scores with their bootstrap
intervals, training clips/s, wall time) and a table of per-genre test ROC-AUC, one column per
run. Runs whose labels or data (subset, label mode, ...) differ go to separate tables, with a
warning: scores on different label sets or splits are not comparable.

``genretag test`` logs to a version folder of its own; when the fit folder of its checkpoint
(``ckpt_path`` in the test folder's config.yaml: ``<fit folder>/checkpoints/<name>.ckpt``) is
also given, the test's scores go into the fit's row ("version_0 + test version_4") instead of a
row of their own. The fit's wall time stays the fit's.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genretag.errors import ConfigError, run_command

log = logging.getLogger(__name__)

PER_LABEL = "test_roc_auc_per_label/"
DATA_KEYS = ("class_path", "subset", "labels", "min_tracks", "verified")


@dataclass
class Run:
    """What one version folder holds: hyper-parameters and the last value/epoch of each scalar."""

    name: str
    hparams: dict[str, Any]
    scalars: dict[str, list[tuple[float, int, float]]]  # tag -> [(wall_time, step, value)]
    start: float | None
    data: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None
    ckpt_path: str | None = None  # config.yaml's ckpt_path: the checkpoint a test run evaluated
    merged_tags: set[str] = field(default_factory=set)  # a test run's tags: not in the wall time

    @property
    def labels(self) -> list[str]:
        return [str(label) for label in self.hparams.get("labels") or []]

    @property
    def trunk(self) -> str:
        trunk = self.hparams.get("trunk")
        if trunk is None:
            return "CRNN"
        if isinstance(trunk, dict):
            return str(trunk.get("class_path", "?")).rsplit(".", 1)[-1]
        return str(trunk)

    def last(self, tag: str) -> float | None:
        events = self.scalars.get(tag)
        return events[-1][2] if events else None

    def group_key(self) -> tuple:
        return (tuple(self.labels), tuple(sorted((k, str(v)) for k, v in self.data.items())))


def read_run(folder: Path) -> Run:
    """One version folder: hparams.yaml, the data section of config.yaml, all scalar events."""
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not folder.is_dir():
        raise ConfigError(f"compare: {folder} is not a folder (give lightning_logs/version_N)")
    hparams: dict[str, Any] = {}
    hparams_file = folder / "hparams.yaml"
    if hparams_file.exists():
        try:
            hparams = yaml.safe_load(hparams_file.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(
                f"{hparams_file}: not plain YAML ({error.__class__.__name__})"
            ) from None
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # "No path found after ..." per run
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags().get("scalars", [])
    if not tags:
        raise ConfigError(f"compare: {folder} has no TensorBoard scalars (no events.out.tfevents*)")
    scalars = {
        tag: [(e.wall_time, e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags
    }
    try:
        start = accumulator.FirstEventTimestamp()
    except ValueError:
        start = None
    config = _config(folder / "config.yaml")
    ckpt_path = config.get("ckpt_path")
    return Run(
        name=f"{folder.parent.name}/{folder.name}",
        hparams=hparams,
        scalars=scalars,
        start=start,
        data=_data_identity(hparams, config),
        folder=folder,
        ckpt_path=ckpt_path if isinstance(ckpt_path, str) else None,
    )


def _config(config_file: Path) -> dict[str, Any]:
    """LightningCLI's config.yaml as plain data ({} when missing or not a YAML mapping)."""
    import yaml

    if not config_file.exists():
        return {}
    try:
        config = yaml.safe_load(config_file.read_text())
    except yaml.YAMLError:
        return {}
    return config if isinstance(config, dict) else {}


def _is_test_tag(tag: str) -> bool:
    return tag.startswith(("test/", PER_LABEL))


def merge_tests(runs: list[Run]) -> list[Run]:
    """``runs`` with each test-only run folded into the fit run of its checkpoint.

    A run is test-only when it has test scalars, no ``val/roc_auc`` and a ``ckpt_path`` of the
    form ``<fit folder>/checkpoints/<file>``; its fit run is the given run whose folder is that
    folder (same resolved path, else the only one whose last two path parts match). A test
    without such a fit run keeps its own row.
    """
    fits = [run for run in runs if "val/roc_auc" in run.scalars and run.folder is not None]
    merged: set[int] = set()
    for i, run in enumerate(runs):
        if run.ckpt_path is None or "val/roc_auc" in run.scalars:
            continue
        if not any(_is_test_tag(tag) for tag in run.scalars):
            continue
        target = _fit_of(Path(run.ckpt_path), fits)
        if target is None:
            continue
        tags = {tag for tag in run.scalars if _is_test_tag(tag)}
        for tag in tags:
            target.scalars[tag] = run.scalars[tag]
        target.merged_tags |= tags
        target.name = f"{target.name} + test {run.folder.name if run.folder else run.name}"
        merged.add(i)
    return [run for i, run in enumerate(runs) if i not in merged]


def _fit_of(ckpt: Path, fits: list[Run]) -> Run | None:
    """The fit run whose folder holds ``ckpt`` (``<folder>/checkpoints/<file>``), else None."""
    if ckpt.parent.name != "checkpoints":
        return None
    folder = ckpt.parent.parent
    exact = [run for run in fits if run.folder and run.folder.resolve() == folder.resolve()]
    if exact:
        return exact[0]
    tail = folder.parts[-2:]
    same_tail = [run for run in fits if run.folder and run.folder.resolve().parts[-2:] == tail]
    return same_tail[0] if len(same_tail) == 1 else None


def _data_identity(hparams: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The settings that choose the tracks and labels (not paths): from hparams' ``data``, else
    LightningCLI's config.yaml, else none (then only the labels tell runs apart)."""
    data = hparams.get("data")
    if not isinstance(data, dict):
        data = config.get("data")
    if not isinstance(data, dict):
        return {}
    args = {**data, **(data.get("init_args") or {})}
    identity = {k: args[k] for k in DATA_KEYS if k in args and k != "class_path"}
    if "class_path" in data:
        identity["class_path"] = str(data["class_path"]).rsplit(".", 1)[-1]
    return identity


def parameter_count(run: Run) -> int | None:
    """Logged (hparams ``n_params`` or scalar ``params``), else trunk + head built from hparams."""
    if isinstance(run.hparams.get("n_params"), int):
        return run.hparams["n_params"]
    if run.last("params") is not None:
        return int(run.last("params"))
    trunk = run.hparams.get("trunk")
    if not run.labels or (trunk is not None and not isinstance(trunk, dict)):
        return None
    from genretag.models import build_trunk, count_parameters

    h = run.hparams
    crnn = {k: h[k] for k in ("channels", "gru_hidden", "gru_layers", "dropout") if k in h}
    if "channels" in crnn:
        crnn["channels"] = tuple(crnn["channels"])
    try:
        module = build_trunk(trunk, int(h.get("n_mels", 96)), **crnn)
    except (ConfigError, TypeError, ValueError):
        return None
    head = module.out_features * len(run.labels) + len(run.labels)  # Linear(out_features, C)
    return count_parameters(module) + head


def summary(run: Run) -> dict[str, Any]:
    """The row of one run (numbers, None where the run has no such value)."""
    row: dict[str, Any] = {"run": run.name, "trunk": run.trunk, "params": parameter_count(run)}
    row["window_s"] = run.hparams.get("window_seconds")
    best = max(run.scalars.get("val/roc_auc", []), key=lambda e: e[2], default=None)
    row["best_epoch"] = row["val_roc_auc"] = row["val_pr_auc"] = None
    if best is not None:
        row["val_roc_auc"] = best[2]
        row["best_epoch"] = _at_step(run.scalars.get("epoch"), best[1], default=best[1])
        row["val_pr_auc"] = _at_step(run.scalars.get("val/pr_auc"), best[1])
    for name in ("roc_auc", "pr_auc"):
        for suffix in ("", "_lo", "_hi"):
            row[f"test_{name}{suffix}"] = run.last(f"test/{name}{suffix}")
    row["clips_per_s"] = run.last("train/clips_per_s")
    own = [events for tag, events in run.scalars.items() if tag not in run.merged_tags]
    ends = [events[-1][0] for events in own]
    first = min([events[0][0] for events in own] + [run.start or math.inf])
    row["wall_s"] = max(ends) - first if ends else None
    return row


def _at_step(events: list[tuple[float, int, float]] | None, step: int, default: Any = None) -> Any:
    """The value logged at ``step`` (the last such); ``epoch`` values come back as int."""
    values = [value for _, s, value in events or () if s == step]
    if not values:
        return default
    return values[-1]


# -- formatting ----------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 4) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def _with_interval(row: dict[str, Any], name: str) -> str:
    point, lo, hi = row[f"test_{name}"], row[f"test_{name}_lo"], row[f"test_{name}_hi"]
    if point is None:
        return "-"
    if lo is None or hi is None:
        return _num(point)
    return f"{_num(point)} [{_num(lo)}, {_num(hi)}]"


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def markdown_tables(runs: list[Run], rows: list[dict[str, Any]]) -> str:
    """The run table and the per-genre table of one group of comparable runs."""
    head = [
        "run", "trunk", "params", "window s", "best epoch", "val ROC-AUC", "val PR-AUC",
        "test ROC-AUC [95% CI]", "test PR-AUC [95% CI]", "train clips/s", "wall",
    ]  # fmt: skip
    lines = [_md_row(head), _md_row(["---"] * len(head))]
    for row in rows:
        epoch = row["best_epoch"]
        lines.append(
            _md_row(
                [
                    row["run"],
                    row["trunk"],
                    "-" if row["params"] is None else f"{row['params']:,}",
                    "-" if row["window_s"] is None else f"{row['window_s']:g}",
                    "-" if epoch is None else f"{int(epoch)}",
                    _num(row["val_roc_auc"]),
                    _num(row["val_pr_auc"]),
                    _with_interval(row, "roc_auc"),
                    _with_interval(row, "pr_auc"),
                    _num(row["clips_per_s"], 1),
                    _wall(row["wall_s"]),
                ]
            )
        )
    labels = runs[0].labels
    lines += ["", _md_row(["test ROC-AUC", *[r.name for r in runs]])]
    lines.append(_md_row(["---"] * (len(runs) + 1)))
    for label in labels:
        lines.append(_md_row([label, *[_num(r.last(PER_LABEL + label)) for r in runs]]))
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def groups(runs: list[Run]) -> list[list[int]]:
    """Indices of runs with the same labels and data, in first-seen order."""
    by_key: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        by_key.setdefault(run.group_key(), []).append(i)
    return list(by_key.values())


def _describe(run: Run) -> str:
    data = ", ".join(f"{k}={v}" for k, v in sorted(run.data.items()))
    labels = ", ".join(run.labels[:4]) + (
        f", ... ({len(run.labels)})" if len(run.labels) > 4 else ""
    )
    return f"labels [{labels}]" + (f", data {data}" if data else "")


def render(runs: list[Run]) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown report (warning lines first when the runs form several groups) and the rows."""
    rows = [summary(run) for run in runs]
    parts = groups(runs)
    out = []
    if len(parts) > 1:
        out.append(
            f"warning: these runs differ in labels or data and are not comparable; "
            f"{len(parts)} separate tables follow"
        )
    for number, members in enumerate(parts, 1):
        if len(parts) > 1:
            out += ["", f"## group {number}: {_describe(runs[members[0]])}"]
        out += ["", markdown_tables([runs[i] for i in members], [rows[i] for i in members])]
        for i in members:
            rows[i]["group"] = number
    return "\n".join(out).lstrip("\n") + "\n", rows


def write_csv(path: Path, runs: list[Run], rows: list[dict[str, Any]]) -> None:
    """One row per run, the group number, every number as a column, per-label ROC-AUC last."""
    labels: list[str] = []
    for run in runs:
        labels += [label for label in run.labels if label not in labels]
    columns = ["group", *[k for k in rows[0] if k != "group"]]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns + [f"test_roc_auc/{label}" for label in labels])
        for run, row in zip(runs, rows, strict=True):
            per_label = [run.last(PER_LABEL + label) for label in labels]
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns]
                            + ["" if v is None else v for v in per_label])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``genretag compare ...``; errors are one line (genretag.errors.run_command)."""
    return run_command("compare", _main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="genretag compare", description="compare runs from their TensorBoard logs"
    )
    parser.add_argument("runs", nargs="+", help="version folders (lightning_logs/version_*)")
    parser.add_argument("--out", help="also write the table to a .md or .csv file")
    args = parser.parse_args(argv)
    if args.out and Path(args.out).suffix not in (".md", ".csv"):
        raise ConfigError(f"--out: {args.out} must end in .md or .csv")
    runs = merge_tests([read_run(Path(folder)) for folder in args.runs])
    text, rows = render(runs)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        if out.suffix == ".csv":
            write_csv(out, runs, rows)
        else:
            out.write_text(text)
    return 0
