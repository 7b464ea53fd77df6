"""skd bench: the CLI on digits in quick mode, and its input errors."""

import json
import subprocess
import sys

import pytest

from skd.bench import main


def test_bench_quick_on_digits_writes_table_json_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = main(["bench", "--quick", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| loss | accuracy (mean ± std) | gap closed | fit seconds |" in out
    for loss in ("ce", "kd", "dkd", "cakd", "r2kd", "dist", "tfkd"):
        assert f"| {loss} |" in out
    report = json.loads((tmp_path / "results-digits.json").read_text())
    assert len(report["runs"]) == 7 and report["teacher"]["cached"] is False
    assert (tmp_path / "results-digits.png").stat().st_size > 1000
    # the teacher is cached on disk and reused
    assert main(["bench", "--quick", "--losses", "kd", "--out", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    report = json.loads((tmp_path / "results-digits.json").read_text())
    assert report["teacher"]["cached"] is True
    assert {r["loss"] for r in report["runs"]} == {"ce", "kd"}


def test_bench_rejects_unknown_losses(capsys):
    assert main(["bench", "--losses", "kd", "magic"]) == 2
    assert "unknown losses ['magic']" in capsys.readouterr().err


def test_python_dash_m_skd_help():
    out = subprocess.run([sys.executable, "-m", "skd", "bench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--dataset" in out.stdout
