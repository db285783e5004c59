"""Hostile inputs to the companion packages (speechkern.losses, speechkern.collapse) and their command lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from speechkern import losses
from speechkern.errors import SpeechkernError
from speechkern.losses import bench, calibration

INF, NAN = float("inf"), float("nan")


def test_loss_gradients_match_finite_differences():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda f: losses.rescaled_square_loss(f, y, t=2.0, M=3.0), (x,))
    assert torch.autograd.gradcheck(lambda f: losses.squentropy_loss(f, y, alpha=0.7), (x,))


@pytest.mark.parametrize(
    "call",
    [
        lambda x, y: losses.rescaled_square_loss(x, y, t=INF),
        lambda x, y: losses.rescaled_square_loss(x, y, M=NAN),
        lambda x, y: losses.rescaled_square_loss(x, y, M=INF),
        lambda x, y: losses.squentropy_loss(x, y, alpha=INF),
        lambda x, y: losses.RescaledSquareLoss(M=NAN)(x, y),
        lambda x, y: losses.SquentropyLoss(alpha=INF)(x, y),
        lambda x, y: calibration.square_loss_probabilities(x, M=INF),
    ],
)
def test_non_finite_loss_scales_are_refused(call):
    """A non-finite t, M or α made every loss NaN or inf without a word."""
    x, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    with pytest.raises(ValueError, match=r"^(t|M|alpha)=.*(finite|number)"):
        call(x, y)


def test_ece_against_a_hand_computation():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    # two bins: every confidence (.9 .6 .7 .55) is in [0.5, 1]; 2 of 4 right, mean confidence .6875
    assert calibration.expected_calibration_error(probs, np.array([0, 1, 1, 0]), 2) == pytest.approx(0.1875)
    # whole-number float labels are class indices too
    assert calibration.expected_calibration_error(probs, np.array([0.0, 1.0, 1.0, 0.0]), 2) == pytest.approx(0.1875)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([0, 1, 1.5, 0]), "class indices from 0 to 1.*1.5"),
        (np.array([0, 1, 7, 0]), "class indices from 0 to 1.*7"),
        (np.array([0, 1, -1, 0]), "class indices from 0 to 1"),
        (np.array([0, 1, NAN, 0]), "class indices from 0 to 1"),
        (np.array(["a", "b", "a", "b"]), "class indices"),
    ],
)
def test_ece_refuses_labels_that_are_not_class_indices(labels, match):
    """Such a label matched no prediction and counted as an error: a silently wrong ECE."""
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    with pytest.raises(ValueError, match=match):
        calibration.expected_calibration_error(probs, labels, 2)


@pytest.mark.parametrize(
    ("confidence", "correct", "n_bins", "match"),
    [
        ([0.5, NAN], [1, 0], 15, "confidences must lie in"),  # NaN was dropped from the bins, not from n
        ([0.5, 0.2], [2, 0], 15, "correct must hold"),
        ([0.5, 0.2], [NAN, 0], 15, "correct must hold"),
        ([0.5, 0.2], [1, 0], 2.5, "n_bins=2.5 must be an integer"),
        ([0.5, 0.2], [1, 0], NAN, "n_bins=nan must be an integer"),
        ([0.5, 0.2], [1, 0], 10**12, "n_bins=1000000000000 must be an integer"),  # was a MemoryError
        ([0.5, 0.2], [1, 0], "5", "n_bins='5' must be an integer"),
    ],
)
def test_calibration_bins_refuse_hostile_values(confidence, correct, n_bins, match):
    with pytest.raises(ValueError, match=match):
        calibration.calibration_bins_from_confidence(np.array(confidence), np.array(correct), n_bins)


@pytest.mark.parametrize("setting", ["rescaled_t", "rescaled_M", "squentropy_alpha", "weight_decay"])
def test_bench_config_refuses_infinite_settings(setting):
    """--rescaled-t inf trained to NaN outputs and ended in a ValueError traceback from the ECE."""
    with pytest.raises(SpeechkernError, match=f"{setting}=inf is out of range"):
        bench.BenchConfig(**{setting: INF})
    with pytest.raises(SpeechkernError, match="learning_rates"):
        bench.BenchConfig(learning_rates=(1e-3, INF))


@pytest.mark.parametrize(("lr", "shown"), [("nan", "--lr nan is"), ("1e-3,inf", "--lr 0.001,inf is")])
def test_losses_bench_shows_a_bad_learning_rate_list_as_it_was_given(tmp_path, capsys, lr, shown):
    """--lr nan was shown as "--lr (nan,) is out of range": the tuple it was parsed into."""
    code, _, err = run_cli(["losses", "bench", "--builtin", "--out", str(tmp_path / "b"), "--lr", lr], capsys)
    assert code != 0 and err.strip().count("\n") == 0 and f"error: {shown} out of range; expected" in err, err
    assert "(" not in err.split("expected")[0], err


def test_losses_bench_cli_refuses_infinite_scale_before_writing(tmp_path, capsys):
    out = tmp_path / "bench"
    code, _, err = run_cli(["losses", "bench", "--builtin", "--out", str(out), "--rescaled-t", "inf"], capsys)
    assert code != 0 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "--rescaled-t inf is out of range" in err  # the flag, not the field
    assert not out.exists()


def test_losses_bench_refuses_features_too_large_to_standardise_before_training(tmp_path, capsys):
    """A set with features of 1e300 printed eight lines of NumPy RuntimeWarnings, trained every network of the first
    split, then blamed the learning rate ("outputs are NaN or infinite; lower learning_rates")."""
    rng = np.random.default_rng(0)
    rows = [f"{v:.17g},{w:.17g},{i % 2}" for i, (v, w) in enumerate(rng.random((40, 2)))]
    rows[5] = f"3e299,{rng.random():.17g},1"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "bench"
    code, _, err = run_cli(["losses", "bench", "--data", str(tmp_path / "data"), "--epochs", "1", "--seeds", "1",
                            "--out", str(out)], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "Warning" not in err, err
    assert err == (f"error: {tmp_path}/data/big.csv, row 7: feature value 3e299 is too large to standardise (its "
                   "square overflows); rescale that column so that its values stay within ±1e+150\n")  # fmt: skip
    rows[5] = f"1e150,{rng.random():.17g},1"
    (tmp_path / "data" / "big.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    from speechkern.losses.bench_data import load_csv_dataset

    assert load_csv_dataset(tmp_path / "data" / "big.csv").features.shape == (40, 2)  # at the limit: read


def test_collapse_cli_output_below_a_file(tmp_path, capsys):
    """An --out below a file ended in a NotADirectoryError traceback."""
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub"
    code, _, err = run_cli(["collapse", "run", "--out", str(out), "--dataset", "iris", "-q"], capsys)
    assert code != 0 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "is a file, not a folder" in err


def test_collapse_cli_reruns_where_a_stopped_run_left_only_its_log(tmp_path, capsys):
    """A stopped run leaves collapse.log; the rerun refused the folder as 'not empty' without --overwrite."""
    out = tmp_path / "collapse"
    out.mkdir()
    (out / "collapse.log").write_text("2026-01-01 INFO speechkern: train n=50 1/2\n")
    argv = ["collapse", "run", "--out", str(out), "--dataset", "iris", "--train-sizes", "50", "--no-transfer"]
    code, _, err = run_cli([*argv, "--epochs", "2", "--checkpoints", "2", "-q"], capsys)
    assert code == 0, err
    assert (out / "results.json").is_file()
    assert (out / "collapse.log").read_text().startswith("2026-01-01")  # the old log is kept, appended to
    code, _, err = run_cli([*argv, "--epochs", "2", "--checkpoints", "2", "-q"], capsys)
    assert code != 0 and "not empty" in err  # finished results are still protected


@pytest.mark.parametrize("argv", [["--lr", "1e30"], ["--data", "HUGE"]])
def test_losses_bench_diverged_training_is_one_line(tmp_path, capsys, argv):
    """A learning rate of 1e30, or features of 1e300 (their standard deviation overflows), gave NaN outputs and a
    ValueError traceback from the ECE ('probabilities must lie in [0, 1]')."""
    if argv[0] == "--data":
        rng = np.random.default_rng(0)
        x = rng.normal(size=(40, 2)) * 1e300
        rows = [f"{float(a)!r},{float(b)!r},{int(a > 0)}" for a, b in x]
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "huge.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
        argv = ["--data", str(tmp_path / "data")]
    else:
        argv = [*argv, "--builtin", "--dataset", "iris"]
    common = ["--seeds", "1", "--epochs", "2", "--losses", "square", "--out", str(tmp_path / "out")]
    code, _, err = run_cli(["losses", "bench", *argv, *common], capsys)
    assert code != 0 and "Traceback" not in err and err.strip().count("\n") == 0, err
    if argv[0] == "--data":  # refused as it is read, before any training
        assert "huge.csv, row 2: feature value" in err and "too large to standardise" in err, err
    else:
        assert "outputs are NaN or infinite" in err and "seed 0" in err


def test_collapse_measures_on_constructed_features():
    from speechkern.collapse import nc_metrics, train_variance, weak_test_variance

    means = 5.0 * np.eye(3)
    y = np.repeat([0, 1, 2], 4)
    assert train_variance(means[y], y) == 0.0 and weak_test_variance(means[y], 3) == 0.0
    nc = nc_metrics(means[y], y, means - means.mean(axis=0))  # self-dual simplex: NC1–NC3 vanish, NC4 agrees
    assert nc.nc1 == 0.0 and nc.nc3 == pytest.approx(0.0, abs=1e-12) and nc.nc4_agreement == 1.0
    H = means[y] + np.random.default_rng(0).normal(size=(12, 3)) * 0.1
    mu = np.array([H[y == k].mean(0) for k in range(3)])
    by_hand = np.mean(((H - mu[y]) ** 2).sum(1)) / np.mean(((mu - mu.mean(0)) ** 2).sum(1))
    assert train_variance(H, y) == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize(
    ("H", "y", "match"),
    [
        (np.ones((4, 2)) + 1j, [0, 0, 1, 1], "H must hold real numbers; got dtype complex128"),  # imaginary dropped
        (np.array([["a", "b"]] * 4), [0, 0, 1, 1], "H must hold real numbers"),  # was numpy's ValueError
        (np.eye(4, 2), [0.0, np.nan, 1.0, 1.0], "y holds NaN"),  # NaN labels were accepted
    ],
)
def test_collapse_measures_refuse_hostile_dtypes(H, y, match):
    from speechkern.collapse import train_variance

    with pytest.raises(SpeechkernError, match=match):
        train_variance(H, np.array(y))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--lambda", "inf"], "lam=inf is out of range"),  # was a ValueError traceback from matplotlib
        (["--sim-r", "inf"], "sim_R=inf is out of range"),  # was a JSON ValueError traceback
        (["--sim-r", "1,-1"], "sim_R=1,-1 is out of range"),  # was accepted
        (["--r-max", "inf"], "give finite 0 < r-min < r-max"),  # was 'R=nan is out of range'
        (["--lambda", "1e300"], "lam=1e+300 is out of range; give 0 < lam ≤ 10000"),  # was an OverflowError
        (["--lambda", "3e4"], "lam=30000.0 is out of range"),  # was matplotlib's "cannot be log-scaled"
        (["--r-min", "1e200", "--r-max", "1e300"], "R_values holds 1e+300, out of range"),  # OverflowError
    ],
)
def test_losses_asymptotics_refuses_non_finite_settings(tmp_path, capsys, argv, match):
    out = tmp_path / "out"
    code, _, err = run_cli(["losses", "asymptotics", "--out", str(out), "--no-simulation", *argv], capsys)
    assert code != 0 and "Traceback" not in err and err.strip().count("\n") == 0 and match in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["losses", "bench", "--builtin", "--dataset", "iris", "--seeds", "1", "--epochs", "1"], "hidden widths"),
        (["collapse", "run", "--dataset", "iris", "--train-sizes", "50", "--no-transfer", "-q"], "lower width"),
    ],
)
def test_a_network_too_wide_for_memory_is_one_line(tmp_path, capsys, argv, match):
    """--width 100000000000 ended in torch's 'DefaultCPUAllocator: can't allocate memory' RuntimeError traceback."""
    code, _, err = run_cli([*argv, "--width", "100000000000", "--out", str(tmp_path / "out")], capsys)
    assert code != 0 and "Traceback" not in err and err.strip().count("\n") == 0 and match in err, err


@pytest.mark.parametrize("content", ["[1, 2]", '{"key": 3, "runs": [{"x": 1}]}', "{trunc"])
def test_losses_bench_resume_recomputes_a_foreign_set_file(tmp_path, capsys, content):
    """A sets/<name>.json (or bench.json) holding JSON that is not the object written ended the resume in an
    AttributeError traceback; a torn file was recomputed already."""
    out = tmp_path / "out"
    argv = ["losses", "bench", "--builtin", "--dataset", "iris", "--seeds", "1", "--epochs", "1", "--losses", "square"]
    argv += ["--out", str(out), "--json"]
    code, first, err = run_cli(argv, capsys)
    assert code == 0, err
    (out / "sets" / "iris.json").write_text(content)
    code, again, err = run_cli(argv, capsys)
    assert code == 0 and "Traceback" not in err, err
    runs = [{k: r[k] for k in ("dataset", "loss", "seed", "accuracy", "ece")} for r in json.loads(again)["runs"]]
    assert runs == [
        {k: r[k] for k in ("dataset", "loss", "seed", "accuracy", "ece")} for r in json.loads(first)["runs"]
    ]
    assert json.loads(again)["resumed_datasets"] == []
    (out / "bench.json").write_text("[1, 2]")
    code, _, err = run_cli(argv, capsys)
    assert code != 0 and "Traceback" not in err and "not empty" in err


@pytest.mark.parametrize("killed_in", ["bench.json", "iris.json"])
def test_losses_bench_resumes_after_a_kill_mid_write_and_removes_its_part_file(tmp_path, killed_in):
    """A bench killed (SIGKILL) while writing left its .part file: a rerun kept it forever (killed in a set's
    file), or refused the folder as not empty (killed in bench.json, the first file written)."""
    import signal
    import subprocess
    import sys

    from speechkern.losses import bench

    out = tmp_path / "out"
    config = "bench.BenchConfig(seeds=1, epochs=1, hidden=(8,))"
    code = f"""
import os, signal
from pathlib import Path
from speechkern import outputs
from speechkern.losses import bench
real = bench.write_text
def killing(path, text):
    if Path(path).name != {killed_in!r}:
        return real(path, text)
    def half(tmp):
        Path(tmp).write_text(text[: len(text) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return outputs.atomic_write(path, half)
bench.write_text = killing
bench.run_benchmark({str(out)!r}, {config}, datasets=["wine", "iris"], losses=["square"])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc
    assert [p.name for p in out.rglob("*.part")], "the kill left no .part file"
    result = bench.run_benchmark(out, eval(config), datasets=["wine", "iris"], losses=["square"])
    assert not list(out.rglob("*.part")) and (out / "results.json").is_file()
    assert result.resumed == (["wine"] if killed_in == "iris.json" else [])
    assert {r.dataset for r in result.runs} == {"wine", "iris"}


def test_collapse_cli_resumes_an_interrupted_run_keeping_its_finished_parts(tmp_path, capsys, monkeypatch):
    """An interrupted `collapse run` kept nothing: the same command trained every train size again."""
    from speechkern.collapse import experiments

    argv = ["collapse", "run", "--dataset", "iris", "--train-sizes", "50,100", "--epochs", "2", "--checkpoints", "2",
            "-q"]  # fmt: skip
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "whole")], capsys)
    assert code == 0, err
    real_transfer, real_sizes = experiments.transfer_experiment, experiments.collapse_over_time

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "transfer_experiment", interrupted)
    out = tmp_path / "stopped"
    (out / "parts").mkdir(parents=True)
    (out / "parts" / ".size-50.json.abcd1234.part").write_text('{"key')  # a write cut by a kill
    code, _, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 130 and "interrupted; run the same command again" in err, err
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["size-100.json", "size-50.json"]
    trained = []
    monkeypatch.setattr(experiments, "transfer_experiment", real_transfer)
    monkeypatch.setattr(experiments, "collapse_over_time", lambda *a: trained.append(a[2]) or real_sizes(*a))
    code, _, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 0 and trained == [], err
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())

    def results(folder):
        data = json.loads((folder / "results.json").read_text())
        data.pop("seconds"), data["summary"].pop("seconds")
        return data

    assert results(out) == results(tmp_path / "whole")
    assert (out / "over_time.csv").read_text() == (tmp_path / "whole" / "over_time.csv").read_text()


@pytest.mark.parametrize("seed", ["-1", "4294967295"])
def test_collapse_cli_refuses_a_seed_outside_scikit_learns_range(tmp_path, capsys, seed):
    """--seed -1 (or 2**32 - 1, whose transfer probe draws with seed + 1) ended in scikit-learn's
    InvalidParameterError traceback from train_test_split."""
    out = tmp_path / "collapse"
    code, _, err = run_cli(["collapse", "run", "--out", str(out), "--dataset", "iris", "--seed", seed, "-q"], capsys)
    assert code == 2 and "Traceback" not in err and "--seed" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"seed": -1}, r"^seed=-1: expected a whole number from 0 to 4294967294"),
        ({"seed": 1.5}, r"^seed=1\.5: expected a whole number"),
        ({"seed": True}, r"^seed=True: expected a whole number"),
        ({"epochs": "3"}, r"^epochs='3': expected a whole number"),
        ({"lr": NAN}, r"^lr=nan: expected a finite number"),
        ({"transfer": "no"}, r"^transfer='no': expected True or False"),
        ({"dataset": ["iris"]}, r"^dataset=\['iris'\]: expected a string"),
        ({"train_sizes": (50, 0)}, r"^train_sizes=\(50, 0\): expected whole numbers ≥ 1"),
    ],
)
def test_collapse_config_refuses_settings_of_the_wrong_type(setting, match):
    """The library's settings were compared, not typed: seed=-1 or 1.5 reached scikit-learn, epochs='3' a
    TypeError, transfer='no' was true."""
    from speechkern.collapse.experiments import CollapseConfig

    with pytest.raises(SpeechkernError, match=match):
        CollapseConfig(**setting).validate()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["losses", "bench", "--builtin", "--dataset", "iris", "--seeds", "1", "--epochs", "1"],
         "a network of hidden widths (2000, 2000): the network's 4.01e+06 weights need about 64 MB to train"),
        (["collapse", "run", "--dataset", "iris", "--train-sizes", "50", "--no-transfer", "--epochs", "1", "-q"],
         "--width 2000: the network's 8.01e+06 weights need about 128 MB to train"),
    ],
)  # fmt: skip
def test_a_network_beyond_the_memory_budget_is_refused_before_it_is_built(tmp_path, capsys, monkeypatch, argv, says):
    """A width the allocator granted (--width 60000: 14 GB of weights on a 23 GB machine) was built and initialised
    for minutes, then trained into swap or the kernel's out-of-memory kill: only widths it refused outright were
    one line. Here the budget is lowered to 10 MB so that a small width shows it."""
    from speechkern import limits

    monkeypatch.setattr(limits, "memory_budget", lambda: 10**7)
    code, _, err = run_cli([*argv, "--width", "2000", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert says in err and "over the 10 MB this machine allows; lower" in err, err


def test_asymptotics_lambda_and_r_limits_are_the_solvers_range(tmp_path):
    """λ above 10⁴ had no fixed point (u ≈ 2λ past the scan's e^10) and 10³⁰⁰ overflowed; R² overflowed past 10¹⁵⁴."""
    from dataclasses import replace

    from speechkern.losses import asymptotics as asym
    from speechkern.losses import asymptotics_figures as figures

    assert asym.solve(asym.Problem(k=10, R=1.0, beta=0.2, lam=asym.LAM_MAX)).u == pytest.approx(2 * asym.LAM_MAX, 1e-2)
    for bad in (asym.Problem(k=10, R=1.0, beta=0.2, lam=2e4), asym.Problem(k=10, R=1e200, beta=0.2)):
        with pytest.raises(SpeechkernError, match="(lam=20000.0|R=1e\\+200) is out of range"):
            asym.solve(bad)
    assert asym._given_u(asym.Problem(k=10, R=1e160, beta=0.2), 1.0) is None  # was an OverflowError
    # A Fig. 3.5 with no solved curve is drawn with a note, not matplotlib's log-scale ValueError
    settings = replace(figures.FigureSettings(), simulate=False)
    fig = figures._figure_35([], settings)
    fig.savefig(tmp_path / "empty.png", format="png", dpi=30)
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--lr", "-1"], "error: --lr -1 is out of range; expected one or more finite numbers above 0"),
        (["--optimizer", "lbfgs"], "error: --optimizer 'lbfgs' is out of range; expected one of adam, sgd"),
        (["--test-fraction", "0"], "error: --test-fraction 0.0 is out of range; expected a fraction between 0 and 1"),
        (["--rescaled-m", "-5"], "error: --rescaled-m -5.0 is out of range; expected a finite number above 0"),
    ],
)
def test_losses_bench_says_what_a_setting_expects_in_flags(tmp_path, capsys, argv, says):
    """'benchmark setting learning_rates=(-1.0,) is out of range' named the library's field, not --lr, and said
    nothing of what was expected."""
    out = tmp_path / "out"
    code, _, err = run_cli(["losses", "bench", "--builtin", "--dataset", "iris", "--out", str(out), *argv], capsys)
    assert code == 2 and err.strip().startswith(says), err
    assert not out.exists()


def test_an_interrupted_asymptotics_run_does_not_promise_to_continue(tmp_path, capsys, monkeypatch):
    """Ctrl-C (or a timeout) after 8 minutes of `speechkern losses asymptotics` said "run the same command again
    (with --resume for train) to continue": nothing had been kept, and the same command started from scratch."""
    from speechkern.losses import asymptotics_figures as figures

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "run_asymptotics", interrupted)
    code, _, err = run_cli(["losses", "asymptotics", "--out", str(tmp_path / "a")], capsys)
    assert code == 130 and err.count("\n") == 1, err
    assert err.startswith("interrupted; nothing was kept (the figures are written at the end); the same command "
                          "starts again from the beginning; --no-simulation"), err  # fmt: skip
