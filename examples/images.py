"""Images: a CNN teacher on MNIST-5k distilled into an MLP and a tiny CNN.

Run:  python examples/images.py              (MNIST-5k; the first run also trains the teacher)
      python examples/images.py --write      (also refreshes docs/img/cakd_terms.png)
      SKD_QUICK=1 python examples/images.py  (a smoke test)

The teacher is ``skd bench``'s SmallCNN (conv32-conv64-fc128), trained once
and cached. Two students learn from it with CAKD: an MLP (784-128-10) and a
tiny CNN (conv8-conv16-fc32). The script plots CAKD's three divergences per
epoch from ``history`` into bench-out/img/cakd_terms.png (git-ignored);
``--write`` replaces the figure in docs/img instead.
"""

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from skd import MLP, DistillationClassifier, SmallCNN
from skd.bench import BenchConfig, train_teacher
from skd.data import load_split

#: SKD_QUICK=1 cuts epochs so that the script runs in seconds (the tests use it).
QUICK = os.environ.get("SKD_QUICK") == "1"


def figure_path(name: str) -> Path:
    """Where a figure goes: ``bench-out/img`` here (or ``$SKD_FIGURES_DIR``); with ``--write``, inside
    skd's repository, the tracked ``docs/img`` next to this script's folder."""
    if "--write" in sys.argv[1:] and not QUICK:
        folder = Path(__file__).resolve().parent.parent / "docs" / "img"
    else:
        folder = Path(os.environ.get("SKD_FIGURES_DIR", Path("bench-out") / "img"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def main():
    split = load_split("mnist5k", 0)
    teacher, info = train_teacher(split, BenchConfig(dataset="mnist5k", teacher_epochs=1 if QUICK else 15))
    epochs = 2 if QUICK else 60
    common = dict(teacher=teacher, loss="cakd", optimizer=torch.optim.Adam, lr=1e-3, batch_size=128,
                  max_epochs=epochs, verbose=0, random_state=0)
    mlp = DistillationClassifier(MLP, module__hidden_units=(128,), **common).fit(split.X_train, split.y_train)
    cnn = DistillationClassifier(SmallCNN, module__channels=(8, 16), module__hidden=32, **common)
    cnn.fit(split.X_train, split.y_train)

    print(f"teacher SmallCNN(32, 64)      test accuracy {info['accuracy']:.4f}")
    print(f"student MLP 128 (CAKD)        test accuracy {mlp.score(split.X_test, split.y_test):.4f}")
    print(f"student SmallCNN(8, 16) (CAKD) test accuracy {cnn.score(split.X_test, split.y_test):.4f}")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs_axis = mlp.history[:, "epoch"]
    for term in ("bcd", "scd", "wcd", "ce"):
        ax.plot(epochs_axis, mlp.history[:, term], label=term.upper())
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted term (epoch mean)")
    ax.set_yscale("log")
    ax.set_title("CAKD terms while distilling SmallCNN into an MLP (MNIST-5k)")
    ax.legend()
    fig.tight_layout()
    path = figure_path("cakd_terms.png")
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
