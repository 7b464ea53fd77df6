"""Batch augmentation with an online teacher."""

import pytest
import torch
from torchvision.transforms import v2

from skd.augment import BatchAugment


@pytest.fixture
def student(make_student):
    return make_student.bind(teacher=None, loss="r2kd", max_epochs=2)


@pytest.mark.parametrize("transform", [v2.CutMix(num_classes=10), v2.MixUp(num_classes=10),
                                       v2.RandomErasing(p=1.0)])
def test_torchvision_batch_transforms_run_with_an_online_teacher(digits, transform, student, make_teacher):
    X, y = digits
    teacher = make_teacher()
    clf = student(teacher=teacher, augment=BatchAugment(transform, image_shape=(1, 8, 8))).fit(X, y)
    # the clean view reads the book (one pass); every augmented batch is labelled online
    assert teacher.samples == len(X) + len(X) * 2
    assert clf.history[-1, "value_aug"] > 0 and "rank_aug" in clf.history[-1]
    assert clf.predict(X[:5]).shape == (5,)


def test_replace_mode_uses_only_the_augmented_view(digits, student, make_teacher):
    X, y = digits
    teacher = make_teacher()
    clf = student(teacher=teacher, loss="kd", augment=lambda X, y: X + 0.01 * torch.randn_like(X),
                  augment_mode="replace").fit(X, y)
    assert teacher.samples == len(X) * 2
    assert "kd_aug" not in clf.history[-1]


def test_augment_errors(digits, student, make_teacher):
    X, y = digits
    teacher = make_teacher()
    with pytest.raises(ValueError, match="augment_mode of DistillationClassifier must be one of "
                                         "'add', 'replace'; got 'mix'"):
        student(teacher=teacher, augment=lambda X, y: X, augment_mode="mix").fit(X, y)
    with pytest.raises(ValueError, match="book='memory' cannot be combined with augment_mode='replace'"):
        student(teacher=teacher, augment=lambda X, y: X, book="memory", augment_mode="replace").fit(X, y)
    online = make_teacher()
    student(teacher=online, augment=lambda X, y: X, book="online", max_epochs=1).fit(X, y)
    assert online.samples == 2 * len(X)  # no book: clean and augmented batches online
    with pytest.raises(ValueError, match="it must return a tensor shaped like the batch"):
        student(teacher=teacher, augment=lambda X, y: X[:, :10]).fit(X, y)
    with pytest.raises(ValueError, match="augment of DistillationClassifier must be None or a callable"):
        student(teacher=teacher, augment="cutmix").fit(X, y)
