"""``skd bench``: reproduce skd's accuracy table on real data.

With no arguments it runs the main job: MNIST-5k, one seed per loss, which
shows what distillation buys on real images (README.md gives its time, and the
machine and load it was measured on). ``--dataset digits`` is the smoke test.

Per dataset: train a CNN teacher once (cached on disk under a hash of the data
and its settings), then train the same MLP student with every loss over
several seeds, on one stratified split shared by all runs. Shows each fit's
progress per epoch on stderr, prints a Markdown table (accuracy, gap closed,
fit seconds) and the total time, and writes the table to Markdown, every run
to JSON and a bar chart to PNG.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import Callback

from skd.classifier import DistillationClassifier
from skd.data import DATASETS, Split, add_transfer, load_split
from skd.losses import available_losses
from skd.students import MLP, SmallCNN
from skd.training.threads import load_average

__all__ = ["BenchConfig", "run_bench", "train_teacher", "fit_student", "main", "machine", "BENCH_LOSSES"]

BENCH_LOSSES = ("ce", "kd", "dkd", "cakd", "r2kd", "dist", "tfkd")

#: The dataset of ``skd bench`` with no arguments: real images on which distillation pays.
DEFAULT_DATASET = "mnist5k"

#: Student epochs per dataset. Distillation needs long schedules ("patient"
#: teachers): on MNIST-5k KD trails CE at 30 epochs and leads at 100.
DEFAULT_EPOCHS = {"digits": 30, "mnist5k": 100, "mnist": 20}

#: Seeds per loss and dataset: one keeps the main job short; digits is cheap.
DEFAULT_SEEDS = {"digits": 3, "mnist5k": 1, "mnist": 1}


@dataclass
class BenchConfig:
    """Settings of one benchmark run (``skd bench --help`` explains each)."""

    dataset: str = DEFAULT_DATASET
    seeds: int = 1
    losses: tuple[str, ...] = BENCH_LOSSES
    student_epochs: int = 100
    teacher_epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    student_hidden: tuple[int, ...] = (128,)
    teacher_channels: tuple[int, int] = (32, 64)
    split_seed: int = 0
    out: str = "bench-out"
    cache_dir: str = ".skd_cache"
    quick: bool = False
    loss_params: dict = field(default_factory=dict)
    transfer: int = 0
    device: str = "auto"

    def trimmed(self) -> BenchConfig:
        """The ``--quick`` version: few epochs, one seed."""
        if not self.quick:
            return self
        return BenchConfig(**{**asdict(self), "student_epochs": 2, "teacher_epochs": 2, "seeds": 1})


def _progress(iterable, total, desc):
    try:  # deferred: tqdm is optional (the bench extra)
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)


class EpochProgress(Callback):
    """Show a fit's progress once per epoch on stderr: a tqdm bar, or a line per epoch without tqdm.

    Parameters
    ----------
    desc : str
        What is being fitted, e.g. ``"teacher"`` or ``"kd seed 0"``.
    """

    def __init__(self, desc="fit"):
        self.desc = desc

    def on_train_begin(self, net, **kwargs):
        try:  # deferred: tqdm is optional (the bench extra)
            from tqdm import tqdm
        except ImportError:
            self.bar_ = None
        else:
            self.bar_ = tqdm(total=net.max_epochs, desc=self.desc, unit="epoch", file=sys.stderr, leave=False)

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        loss = row.get("train_loss", float("nan"))
        if self.bar_ is None:
            print(f"{self.desc}: epoch {row['epoch']}/{net.max_epochs}, train_loss {loss:.4f}",
                  file=sys.stderr, flush=True)
        else:
            self.bar_.set_postfix(train_loss=f"{loss:.4f}", refresh=False)
            self.bar_.update(1)

    def on_train_end(self, net, **kwargs):
        if self.bar_ is not None:
            self.bar_.close()


def _processor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def machine(load_at_start: float | None = None) -> str:
    """One sentence naming the machine a timing was measured on, and how busy it was.

    ``load_at_start`` is ``os.getloadavg()[0]`` taken when the timed work began;
    the 1-minute load average now is added, so a reader can tell an idle
    machine (load below its core count) from a shared one.
    """
    if torch.cuda.is_available():
        where = f"{torch.cuda.get_device_name()} and {os.cpu_count()} CPU cores"
    else:
        where = f"{_processor()}, {os.cpu_count()} CPU cores, torch with {torch.get_num_threads()} thread(s)"
    load = load_average()
    if load is None:
        busy = "load average unknown"
    elif load_at_start is None:
        busy = f"1-minute load average {load:.1f}"
    else:
        busy = f"1-minute load average {load_at_start:.1f} at the start, {load:.1f} at the end"
    return f"Measured on {where}; {busy}; torch {torch.__version__}, Python {platform.python_version()}."


def _say(message: str) -> None:
    """A progress line on stderr that does not break a running tqdm bar."""
    try:  # deferred: tqdm is optional (the bench extra)
        from tqdm import tqdm
    except ImportError:
        print(message, file=sys.stderr, flush=True)
    else:
        tqdm.write(message, file=sys.stderr)


def _data_digest(split: Split) -> str:
    digest = hashlib.sha256()
    for array in (split.X_train, split.y_train):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _teacher_module(split: Split, config: BenchConfig) -> torch.nn.Module:
    return SmallCNN(split.X_train.shape[1], len(np.unique(split.y_train)), channels=config.teacher_channels)


def resolve_device(device: str) -> str:
    """``"auto"`` is ``"cuda"`` where torch sees a GPU, else ``"cpu"``; other names pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _classifier(
    config: BenchConfig, module, epochs: int, seed: int, desc: str, **params
) -> DistillationClassifier:
    """The benchmark's training settings (Adam, lr, batch size), shared by teacher and students."""
    return DistillationClassifier(
        module, optimizer=torch.optim.Adam, lr=config.lr, batch_size=config.batch_size,
        max_epochs=epochs, verbose=0, random_state=seed, callbacks=[("progress", EpochProgress(desc))],
        device=resolve_device(config.device),
        unlabelled=-1,  # --transfer rows (skd.data.add_transfer) are marked -1
        **params,
    )


def train_teacher(split: Split, config: BenchConfig) -> tuple[torch.nn.Module, dict]:
    """The dataset's teacher: loaded from the cache, or trained and cached.

    The cache file name holds a hash of the training data and the teacher's
    settings; weights are saved as a state dict and loaded with
    ``torch.load(weights_only=True)``.
    """
    settings = {
        "dataset": split.name,
        "data": _data_digest(split),
        "epochs": config.teacher_epochs,
        "channels": list(config.teacher_channels),
        "lr": config.lr,
        "batch_size": config.batch_size,
        "seed": config.split_seed,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(config.cache_dir) / f"teacher-{split.name}-{key}.pt"
    module = _teacher_module(split, config)
    start = time.perf_counter()
    if path.exists():
        module.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        cached = True
    else:
        net = _classifier(
            config, SmallCNN, config.teacher_epochs, config.split_seed, "teacher (CNN)", loss="ce",
            module__channels=config.teacher_channels,
        ).fit(split.X_train, split.y_train)
        module.load_state_dict(net.module_.state_dict())
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), path)
        cached = False
    seconds = time.perf_counter() - start
    module.eval()
    with torch.no_grad():
        predicted = module(torch.as_tensor(split.X_test)).argmax(1).numpy()
    accuracy = float(np.mean(predicted == split.y_test))
    return module, {"accuracy": accuracy, "seconds": seconds, "cached": cached, "path": str(path)}


def fit_student(split: Split, loss: str, seed: int, teacher, config: BenchConfig, **loss_params):
    """Fit the benchmark's MLP student with one loss; return accuracy and seconds."""
    params = {f"loss__{k}": v for k, v in {**config.loss_params.get(loss, {}), **loss_params}.items()}
    clf = _classifier(
        config, MLP, config.student_epochs, seed, f"{loss} seed {seed}",
        teacher=None if loss == "ce" else teacher, loss=loss,
        module__hidden_units=config.student_hidden,
        # pixels are already on one scale; standardizing each one lowered the student alone on
        # MNIST-5k (0.9330 -> 0.9250 at 40 epochs, one seed: benchmarks/standardize.py --mnist)
        module__standardize=False, **params,
    )
    labelled = split.y_train >= 0 if loss == "ce" else slice(None)  # CE cannot use --transfer rows
    start = time.perf_counter()
    clf.fit(split.X_train[labelled], split.y_train[labelled])
    seconds = time.perf_counter() - start
    return {"accuracy": float(clf.score(split.X_test, split.y_test)), "seconds": seconds}


def summarise(runs: list[dict], teacher_accuracy: float, losses) -> list[dict]:
    """Mean/std accuracy, gap closed and mean fit seconds per loss."""
    rows = []
    ce = [r["accuracy"] for r in runs if r["loss"] == "ce"]
    ce_mean = float(np.mean(ce)) if ce else float("nan")
    for loss in losses:
        accs = [r["accuracy"] for r in runs if r["loss"] == loss]
        secs = [r["seconds"] for r in runs if r["loss"] == loss]
        mean = float(np.mean(accs))
        gap = teacher_accuracy - ce_mean
        rows.append(
            {
                "loss": loss,
                "mean": mean,
                "std": float(np.std(accs)),
                "gap_closed": (mean - ce_mean) / gap if ce and abs(gap) > 1e-12 else float("nan"),
                "seconds": float(np.mean(secs)),
                "n": len(accs),
            }
        )
    return rows


def _accuracy(row: dict) -> str:
    # one seed has no spread: show the mean alone rather than a "± 0.0000" that means nothing
    return f"{row['mean']:.4f}" if row["n"] == 1 else f"{row['mean']:.4f} ± {row['std']:.4f}"


def markdown_table(rows: list[dict], teacher: dict, config: BenchConfig) -> str:
    spread = "one seed, so no spread" if config.seeds == 1 else f"mean ± std over {config.seeds} seeds"
    lines = [
        f"Dataset `{config.dataset}`: teacher (SmallCNN {config.teacher_channels}) test accuracy "
        f"{teacher['accuracy']:.4f}; student MLP {config.student_hidden}, {config.student_epochs} "
        f"epochs, {config.seeds} seed(s).",
        "",
        f"| loss | accuracy ({spread}) | gap closed | fit seconds |",
        "|---|---|---|---|",
    ]
    for row in rows:
        gap = "—" if row["loss"] == "ce" or np.isnan(row["gap_closed"]) else f"{row['gap_closed']:+.0%}"
        lines.append(f"| {row['loss']} | {_accuracy(row)} | {gap} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def bar_chart(rows: list[dict], teacher: dict, path: Path, title: str) -> None:
    # deferred: matplotlib is optional (the bench extra) and slow to import
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = [r["loss"] for r in rows]
    means = [100 * r["mean"] for r in rows]
    stds = [100 * r["std"] for r in rows]
    several = any(r["n"] > 1 for r in rows)
    bars = ax.bar(names, means, yerr=stds if several else None, capsize=4, color="#4c72b0")
    # the axis starts at 0, so that bar heights compare honestly; the labels carry the differences
    ax.bar_label(bars, fmt="%.1f", label_type="center", color="white", fontsize=9)
    ax.axhline(100 * teacher["accuracy"], color="#c44e52", linestyle="--",
               label=f"teacher {100 * teacher['accuracy']:.1f}")
    ax.set_ylim(0.0, 100.0)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_bench(config: BenchConfig) -> dict:
    """Run the benchmark; write ``results-<dataset>.md``, ``.json`` and ``.png`` under ``config.out``."""
    config = config.trimmed()
    start, load_at_start = time.perf_counter(), load_average()
    split = load_split(config.dataset, config.split_seed)
    teacher, teacher_info = train_teacher(split, config)
    how = "loaded from" if teacher_info["cached"] else "trained and saved to"
    _say(f"teacher: test accuracy {teacher_info['accuracy']:.4f}, {how} {teacher_info['path']} "
         f"in {teacher_info['seconds']:.0f} s")
    split = add_transfer(split, config.transfer, config.split_seed)  # after the teacher: labelled rows only
    runs = []
    jobs = [(loss, seed) for loss in config.losses for seed in range(config.seeds)]
    for loss, seed in _progress(jobs, len(jobs), f"skd bench {config.dataset}"):
        result = fit_student(split, loss, seed, teacher, config)
        _say(f"{loss} seed {seed}: test accuracy {result['accuracy']:.4f} in {result['seconds']:.1f} s")
        runs.append({"loss": loss, "seed": seed, **result})
    rows = summarise(runs, teacher_info["accuracy"], config.losses)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "config": asdict(config),
        "teacher": teacher_info,
        "runs": runs,
        "summary": rows,
        "torch": torch.__version__,
        "seconds": time.perf_counter() - start,
        "machine": machine(load_at_start),
    }
    json_path = out / f"results-{config.dataset}.json"
    json_path.write_text(json.dumps(report, indent=2))
    png_path = out / f"results-{config.dataset}.png"
    bar_chart(rows, teacher_info, png_path, f"skd bench: {config.dataset}")
    report["table"] = markdown_table(rows, teacher_info, config) + "\n\n" + report["machine"]
    md_path = out / f"results-{config.dataset}.md"
    md_path.write_text(report["table"] + "\n")
    report["files"] = [str(md_path), str(json_path), str(png_path)]
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skd", description="scikit-learn-native knowledge distillation")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="reproduce the accuracy table on real data")
    bench.add_argument(
        "--dataset", choices=sorted(DATASETS), default=DEFAULT_DATASET,
        help=f"default {DEFAULT_DATASET}; digits is a seconds-long smoke test",
    )
    bench.add_argument(
        "--seeds", type=int, default=None, help="seeds per loss (default: digits 3, mnist5k 1, mnist 1)"
    )
    bench.add_argument("--losses", nargs="+", default=list(BENCH_LOSSES), help="losses to run")
    bench.add_argument(
        "--epochs", type=int, default=None,
        help="student epochs (default: digits 30, mnist5k 100, mnist 20)",
    )
    bench.add_argument("--teacher-epochs", type=int, default=15, help="teacher epochs (default 15)")
    bench.add_argument("--out", default="bench-out", help="output folder (default bench-out)")
    bench.add_argument("--cache-dir", default=".skd_cache", help="teacher cache (default .skd_cache)")
    bench.add_argument("--quick", action="store_true", help="2 epochs, 1 seed: a smoke test")
    bench.add_argument("--device", default="auto",
                       help="where teacher and students train: auto (cuda if available, else cpu), cpu, cuda")
    bench.add_argument("--transfer", type=int, default=0, metavar="N",
                       help="add N unlabelled training rows where the dataset has them (mnist5k)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS[args.dataset]
    if args.seeds is None:
        args.seeds = DEFAULT_SEEDS[args.dataset]
    if args.seeds < 1 or args.epochs < 1 or args.teacher_epochs < 1:
        print("skd bench: --seeds, --epochs and --teacher-epochs must be >= 1", file=sys.stderr)
        return 2
    unknown = sorted(set(args.losses) - set(available_losses()))
    if unknown:
        print(f"skd bench: unknown losses {unknown}; choose from {available_losses()}", file=sys.stderr)
        return 2
    if "ce" not in args.losses:
        args.losses = ["ce", *args.losses]  # the baseline of "gap closed"
    config = BenchConfig(
        dataset=args.dataset,
        seeds=args.seeds,
        losses=tuple(args.losses),
        student_epochs=args.epochs,
        teacher_epochs=args.teacher_epochs,
        out=args.out,
        cache_dir=args.cache_dir,
        quick=args.quick,
        transfer=args.transfer,
        device=args.device,
    )
    try:
        report = run_bench(config)
    except (ImportError, ValueError) as exc:
        print(f"skd bench: {exc}", file=sys.stderr)
        return 2
    print(report["table"])
    teacher = report["teacher"]
    print(f"\nwrote {', '.join(report['files'])}")
    print(f"total time {report['seconds']:.0f} s (teacher {teacher['seconds']:.0f} s, "
          f"{'loaded from the cache' if teacher['cached'] else 'trained'}; students "
          f"{sum(r['seconds'] for r in report['runs']):.0f} s)")
    return 0
