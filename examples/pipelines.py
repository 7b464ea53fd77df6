"""Pipelines and GridSearchCV: tune the loss, prune the teacher, reuse the book.

Run:  python examples/pipelines.py              (digits; grid searches, so it takes a while)
      SKD_QUICK=1 python examples/pipelines.py  (a smoke test)

1. search over ``loss``, ``loss__temperature`` and a schedule parameter;
2. a pipeline with ``PrunedTeacher`` as a step, searched over its amount;
3. ``Pipeline(memory=...)``: candidates that differ only in the student reuse
   the teacher's book (the teacher runs once per fold);
4. honest cross-validation: an unfitted scikit-learn teacher is fitted on
   each training fold only.
"""

import os
import tempfile

import joblib
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skd import MLP, DistillationClassifier, SoftLossSchedule
from skd.teachers import PrunedTeacher

#: SKD_QUICK=1 cuts epochs so that the script runs in seconds (the tests use it).
QUICK = os.environ.get("SKD_QUICK") == "1"


class CountingTeacher(torch.nn.Module):
    """A small torch teacher for 64 features that counts the samples it sees.

    The count is a class attribute, so that joblib's cache key of the teacher
    does not change when it runs.
    """

    samples = 0

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))

    def forward(self, X):
        type(self).samples += len(X)
        return self.net(X)


def train_teacher(X, y):
    torch.manual_seed(0)
    teacher = CountingTeacher()
    opt = torch.optim.Adam(teacher.parameters(), 1e-2)
    Xt, yt = torch.as_tensor(StandardScaler().fit_transform(X), dtype=torch.float32), torch.as_tensor(y)
    for _ in range(20 if QUICK else 200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(teacher(Xt), yt).backward()
        opt.step()
    return teacher.eval()


def main():
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    epochs = 2 if QUICK else 20
    student = DistillationClassifier(MLP, module__hidden_units=(32,), optimizer=torch.optim.Adam, lr=3e-3,
                                     max_epochs=epochs, verbose=0, random_state=0,
                                     callbacks=[("gslr", SoftLossSchedule(start=1.0, end=0.5))])
    teacher = train_teacher(X, y)

    # 1. the loss and its parameters, like any other hyper-parameter
    search = GridSearchCV(
        Pipeline([("scale", StandardScaler()), ("clf", student.set_params(teacher=teacher))]),
        [
            {"clf__loss": ["kd", "dkd"], "clf__loss__temperature": [2.0, 4.0],
             "clf__callbacks__gslr__end": [0.0, 0.5]},
            {"clf__loss": ["ce"]},
        ],
        cv=3, n_jobs=2,
    ).fit(X, y)
    print("1. best:", search.best_params_, f"cv accuracy {search.best_score_:.4f}")

    # 2 + 3. PrunedTeacher as a step; the book is cached by Pipeline(memory)
    with tempfile.TemporaryDirectory() as cache:
        pipe = Pipeline(
            [("scale", StandardScaler()), ("teacher", PrunedTeacher(teacher, amount=0.1, blend=0.7)),
             ("clf", student.set_params(teacher=None, loss="r2kd"))],
            memory=joblib.Memory(cache, verbose=0),
        )
        CountingTeacher.samples = 0
        search = GridSearchCV(pipe, {"clf__lr": [1e-3, 3e-3, 1e-2]}, cv=3).fit(X, y)
        per_fold = 2 * len(X) * 2 // 3  # teacher + pruned copy over one training fold
        print(f"2+3. best {search.best_params_}; teacher saw {CountingTeacher.samples} samples "
              f"for 9 candidate fits (about {per_fold} a fold, {3 * per_fold + 2 * len(X)} in all "
              "with the refit): once per fold, not once per candidate")
        search = GridSearchCV(pipe, {"teacher__amount": [0.0, 0.1, 0.3]}, cv=3).fit(X, y)
        print("   pruning amount:", search.best_params_, f"cv accuracy {search.best_score_:.4f}")

    # 4. an unfitted scikit-learn teacher is fitted inside each training fold
    honest = DistillationClassifier(
        MLP, teacher=LogisticRegression(max_iter=500), loss="kd", max_epochs=epochs,
        optimizer=torch.optim.Adam, lr=3e-3, verbose=0, random_state=0,
    )
    scores = cross_val_score(Pipeline([("scale", StandardScaler()), ("clf", honest)]), X, y, cv=3)
    print(f"4. honest CV accuracy {scores.mean():.4f} ± {scores.std():.4f}")


if __name__ == "__main__":
    main()
