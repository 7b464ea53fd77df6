"""skd bench: the CLI on digits in quick mode, its defaults, and its input errors."""

import json
import subprocess
import sys

import pytest

from skd.bench import DEFAULT_EPOCHS, DEFAULT_SEEDS, build_parser, main


def test_bench_quick_on_digits_writes_table_json_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = main(["bench", "--dataset", "digits", "--quick", "--out", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| loss | accuracy (mean ± std) | gap closed | fit seconds |" in out
    for loss in ("ce", "kd", "dkd", "cakd", "r2kd", "dist", "tfkd"):
        assert f"| {loss} |" in out
    report = json.loads((tmp_path / "results-digits.json").read_text())
    assert len(report["runs"]) == 7 and report["teacher"]["cached"] is False
    assert (tmp_path / "results-digits.png").stat().st_size > 1000
    # the teacher is cached on disk and reused
    assert main(["bench", "--dataset", "digits", "--quick", "--losses", "kd", "--out", str(tmp_path),
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


def test_the_main_job_is_mnist5k_with_one_seed_of_100_epochs():
    # the README's first command: real images, long enough for distillation to pay, about a minute
    args = build_parser().parse_args(["bench"])
    assert args.dataset == "mnist5k" and args.seeds is None and args.epochs is None
    assert DEFAULT_SEEDS["mnist5k"] == 1 and DEFAULT_EPOCHS["mnist5k"] == 100
    assert DEFAULT_SEEDS["digits"] == 3 and DEFAULT_EPOCHS["digits"] == 30
