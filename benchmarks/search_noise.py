"""How many lines a 42-fit grid search prints, at the default ``verbose`` and at ``verbose=1``.

    python benchmarks/search_noise.py [--n-jobs 1]

``GridSearchCV(make_pipeline(StandardScaler(), DistillationClassifier(MLP, teacher=LogisticRegression())),
{loss: 7 losses, lr: 2 values}, cv=3)`` on breast_cancer: 42 fits and the refit,
run in a fresh process per setting; its stdout and stderr lines are counted
(what a notebook cell or a terminal shows).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

SEARCH = textwrap.dedent("""
    import sys
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skd import MLP, DistillationClassifier

    X, y = load_breast_cancer(return_X_y=True)
    verbose = {{}} if sys.argv[1] == "default" else {{"verbose": int(sys.argv[1])}}
    pipe = make_pipeline(StandardScaler(), DistillationClassifier(
        MLP, teacher=LogisticRegression(max_iter=1000), device="cpu", random_state=0, **verbose))
    grid = {{"distillationclassifier__loss": ["ce", "kd", "dkd", "cakd", "r2kd", "dist", "tfkd"],
            "distillationclassifier__lr": [1e-3, 3e-3]}}
    search = GridSearchCV(pipe, grid, cv=3, n_jobs={n_jobs}).fit(X, y)
    print(f"best {{search.best_params_}} {{search.best_score_:.4f}}")
""")


def lines_printed(setting: str, n_jobs: int) -> tuple[int, str]:
    run = subprocess.run([sys.executable, "-c", SEARCH.format(n_jobs=n_jobs), setting],
                         capture_output=True, text=True, check=True)
    out = run.stdout + run.stderr
    return len(out.splitlines()), run.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args()
    for setting in ("default", "1"):
        count, best = lines_printed(setting, args.n_jobs)
        name = "the default verbose" if setting == "default" else f"verbose={setting}"
        print(f"{name}: {count} lines ({best})")


if __name__ == "__main__":
    main()
