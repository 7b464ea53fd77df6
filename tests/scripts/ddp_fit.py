"""A data-parallel fit on 2 CPU processes (gloo), against the same fit in one process.

Run as a script by ``tests/test_scale_out.py``; the docs ("Scale out")
include the marked part. Prints one JSON line: both accuracies, whether the
ranks' students ended equal, and whether the saved student loads and predicts
as rank 0's did.
"""

import argparse
import json
import pickle
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from skd import MLP, DistillationClassifier, PrunedTeacher
from skd.callbacks import GradientAllReduce
from skd.distributed import shard

SETTINGS = {"loss": "kd", "max_epochs": 8, "lr": 1e-2, "optimizer": torch.optim.Adam, "verbose": 0,
            "device": "cpu", "random_state": 0}


# --8<-- [start:rank]
def fit_rank(rank, world_size, book, y, workdir):
    """What each process runs: its shard of the book, gradients averaged over the ranks."""
    dist.init_process_group("gloo", init_method=f"file://{workdir}/rendezvous", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=60))
    torch.set_num_threads(1)
    X_rank, y_rank = shard(book, y)  # every world_size-th row, as many on every rank
    clf = DistillationClassifier(MLP, batch_size=32, callbacks=[("allreduce", GradientAllReduce())],
                                 **SETTINGS).fit(X_rank, y_rank)  # 2 ranks x 32 = batches of 64
    if rank == 0:
        with open(Path(workdir) / "student.pkl", "wb") as f:
            pickle.dump(clf.export_student(), f)  # a plain student: loads without torch.distributed
    weights = torch.cat([p.detach().reshape(-1) for p in clf.module_.parameters()])
    np.save(Path(workdir) / f"weights{rank}.npy", weights.numpy())
    dist.destroy_process_group()
# --8<-- [end:rank]


def main(workdir):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X, X_test, y, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    # --8<-- [start:launch]
    teacher = LogisticRegression(max_iter=500).fit(X, y)
    book = dict(PrunedTeacher(teacher, amount=0).fit_transform(X, y))  # the teacher runs once, here
    mp.spawn(fit_rank, args=(2, book, y, workdir), nprocs=2, join=True)
    # --8<-- [end:launch]
    with open(Path(workdir) / "student.pkl", "rb") as f:
        student = pickle.load(f)
    n = len(y) // 2 * 2  # the rows the ranks shared
    single = DistillationClassifier(MLP, batch_size=64, **SETTINGS).fit(
        {key: value[:n] for key, value in book.items()}, y[:n])
    weights = [np.load(Path(workdir) / f"weights{rank}.npy") for rank in range(2)]
    print(json.dumps({
        "data_parallel_accuracy": float(student.score(X_test, y_test)),
        "single_process_accuracy": float(single.score(X_test, y_test)),
        "ranks_equal": bool(np.array_equal(weights[0], weights[1])),
        "saved_matches_rank0": bool(np.allclose(
            np.concatenate([p.detach().reshape(-1).numpy() for p in student.module_.parameters()]),
            weights[0])),
    }), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    main(parser.parse_args().workdir)
