"""Batch augmentation with an online teacher."""

import pytest
import torch
from torchvision.transforms import v2

from skd import MLP, DistillationClassifier
from skd.augment import BatchAugment


class Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(64, 10)
        self.samples = 0

    def forward(self, X):
        self.samples += X.shape[0]
        return self.linear(X)


def student(**kwargs):
    params = dict(max_epochs=2, verbose=0, device="cpu", optimizer=torch.optim.Adam, lr=1e-2,
                  batch_size=64, random_state=0, loss="r2kd")
    params.update(kwargs)
    return DistillationClassifier(MLP, **params)


@pytest.mark.parametrize("transform", [v2.CutMix(num_classes=10), v2.MixUp(num_classes=10),
                                       v2.RandomErasing(p=1.0)])
def test_torchvision_batch_transforms_run_with_an_online_teacher(digits, transform):
    X, y = digits
    teacher = Counting()
    clf = student(teacher=teacher, augment=BatchAugment(transform, image_shape=(1, 8, 8))).fit(X, y)
    # the clean view reads the book (one pass); every augmented batch is labelled online
    assert teacher.samples == len(X) + len(X) * 2
    assert clf.history[-1, "value_aug"] > 0 and "rank_aug" in clf.history[-1]
    assert clf.predict(X[:5]).shape == (5,)


def test_replace_mode_uses_only_the_augmented_view(digits):
    X, y = digits
    teacher = Counting()
    clf = student(teacher=teacher, loss="kd", augment=lambda X, y: X + 0.01 * torch.randn_like(X),
                  augment_mode="replace").fit(X, y)
    assert teacher.samples == len(X) * 2
    assert "kd_aug" not in clf.history[-1]


def test_augment_errors(digits):
    X, y = digits
    teacher = Counting()
    with pytest.raises(ValueError, match="augment_mode must be 'add' or 'replace'"):
        student(teacher=teacher, augment=lambda X, y: X, augment_mode="mix").fit(X, y)
    with pytest.raises(ValueError, match="teacher_cache=True cannot be combined with augment_mode='replace'"):
        student(teacher=teacher, augment=lambda X, y: X, teacher_cache=True, augment_mode="replace").fit(X, y)
    online = Counting()
    student(teacher=online, augment=lambda X, y: X, teacher_cache=False, max_epochs=1).fit(X, y)
    assert online.samples == 2 * len(X)  # no book: clean and augmented batches online
    with pytest.raises(ValueError, match="it must return a tensor shaped like the batch"):
        student(teacher=teacher, augment=lambda X, y: X[:, :10]).fit(X, y)
    with pytest.raises(TypeError, match="augment must be a callable"):
        student(teacher=teacher, augment="cutmix").fit(X, y)
