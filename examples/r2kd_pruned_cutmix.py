"""R2KD with a pruned teacher and CutMix on MNIST-5k, beside plain KD.

Run:  python examples/r2kd_pruned_cutmix.py          (MNIST-5k; the teacher runs on every batch)
      SKD_QUICK=1 python examples/r2kd_pruned_cutmix.py   (a smoke test)

The R2KD recipe (Kim et al., 2024) as scikit-learn parts: the teacher's
logits are blended with those of a 10%-pruned copy (``PrunedTeacher``), and
every training batch is also seen through CutMix, with the teacher labelling
the mixed images online (``augment=BatchAugment(CutMix)``). The CNN teacher
then runs on every training batch (twice: original and pruned), which is
what makes this recipe slow on a CPU.
"""

import os

import numpy as np
import torch
from torchvision.transforms import v2

from skd import MLP, DistillationClassifier
from skd.augment import BatchAugment
from skd.bench import BenchConfig, train_teacher
from skd.data import load_split
from skd.teachers import PrunedTeacher

#: SKD_QUICK=1 cuts epochs and seeds so that the script runs in seconds (the tests use it).
QUICK = os.environ.get("SKD_QUICK") == "1"


def main(seeds=(0,) if QUICK else (0, 1)):
    split = load_split("mnist5k", 0)
    config = BenchConfig(dataset="mnist5k", teacher_epochs=1 if QUICK else 15)
    teacher, info = train_teacher(split, config)
    epochs = 1 if QUICK else 30
    common = dict(module__hidden_units=(128,), optimizer=torch.optim.Adam, lr=1e-3, batch_size=128,
                  max_epochs=epochs, verbose=0)
    results = {}
    runs = {
        "kd": dict(teacher=teacher, loss="kd"),
        "r2kd + pruned teacher + CutMix": dict(
            teacher=PrunedTeacher(teacher, amount=0.1, blend=0.7),
            loss="r2kd",
            augment=BatchAugment(v2.CutMix(num_classes=10), image_shape=(1, 28, 28)),
        ),
    }
    for name, params in runs.items():
        accs = [DistillationClassifier(MLP, random_state=seed, **common, **params)
                .fit(split.X_train, split.y_train).score(split.X_test, split.y_test) for seed in seeds]
        results[name] = (float(np.mean(accs)), float(np.std(accs)))
    print(f"teacher (SmallCNN) test accuracy {info['accuracy']:.4f}")
    for name, (mean, std) in results.items():
        print(f"{name:32s} test accuracy {mean:.4f} ± {std:.4f} ({len(seeds)} seeds, {epochs} epochs)")
    return results


if __name__ == "__main__":
    main()
