"""skd bench: the CLI on digits in quick mode, its defaults, and its input errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from skd.bench import DEFAULT_EPOCHS, DEFAULT_SEEDS, build_parser, main, resolve_device


def test_bench_quick_on_digits_writes_table_json_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = main(["bench", "--dataset", "digits", "--quick", "--out", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    printed = capsys.readouterr()
    out = printed.out
    # one seed has no spread: the table shows the mean alone, not "± 0.0000"
    assert "| loss | accuracy (one seed, so no spread) | gap closed | fit seconds |" in out
    assert "±" not in out
    for loss in ("ce", "kd", "dkd", "cakd", "r2kd", "dist", "tfkd"):
        assert f"| {loss} |" in out
    assert "total time" in out
    # every timing names the machine and its load
    assert "Measured on" in out and "CPU cores" in out and ("load average" in out)
    # the Markdown table it promises, as printed
    assert (tmp_path / "results-digits.md").read_text().strip() in out
    # progress: the teacher's epochs, each student's epochs, one line per finished fit
    assert "teacher (CNN)" in printed.err and "kd seed 0" in printed.err
    assert "kd seed 0: test accuracy" in printed.err
    report = json.loads((tmp_path / "results-digits.json").read_text())
    assert len(report["runs"]) == 7 and report["teacher"]["cached"] is False
    assert (tmp_path / "results-digits.png").stat().st_size > 1000
    # the teacher is cached on disk and reused
    assert main(["bench", "--dataset", "digits", "--quick", "--losses", "kd", "--out", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "loaded from" in capsys.readouterr().err
    report = json.loads((tmp_path / "results-digits.json").read_text())
    assert report["teacher"]["cached"] is True
    assert {r["loss"] for r in report["runs"]} == {"ce", "kd"}


def test_several_seeds_show_mean_and_spread():
    from skd.bench import BenchConfig, markdown_table

    rows = [{"loss": "ce", "mean": 0.9, "std": 0.01, "gap_closed": float("nan"), "seconds": 1.0, "n": 3}]
    table = markdown_table(rows, {"accuracy": 0.95}, BenchConfig(dataset="digits", seeds=3))
    assert "mean ± std over 3 seeds" in table and "| ce | 0.9000 ± 0.0100 | — | 1.0 |" in table


def test_epoch_progress_prints_a_line_per_epoch_without_tqdm(monkeypatch, capsys):
    import builtins

    from skd import MLP, DistillationClassifier
    from skd.bench import EpochProgress

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    X = np.random.default_rng(0).random((40, 4), dtype=np.float32)
    y = np.arange(40) % 2
    DistillationClassifier(MLP, loss="ce", max_epochs=2, verbose=0, random_state=0,
                           callbacks=[("progress", EpochProgress("student"))]).fit(X, y)
    err = capsys.readouterr().err
    assert "student: epoch 1/2, train_loss" in err and "student: epoch 2/2" in err


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


def test_the_device_defaults_to_auto_which_is_cuda_only_where_torch_sees_one(monkeypatch):
    assert build_parser().parse_args(["bench"]).device == "auto"
    assert build_parser().parse_args(["bench", "--device", "cpu"]).device == "cpu"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cuda") == "cuda"
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
