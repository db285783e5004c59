"""Damaged inputs and interruptions: one-line errors naming the thing, never a traceback; resumes that are exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli as _cli
from safetensors.torch import load_file, save_file

from speechkern.errors import SpeechkernError
from speechkern.features import FeatureConfig, FeatureStats
from speechkern.models.io import MaskModel, split_bands
from speechkern.targets import TargetConfig

FEATURES = FeatureConfig(kind="gf", deltas=False, context=1)  # 64 values per frame, 192 inputs


def _mask_model(kind: str) -> MaskModel:
    from speechkern.eigenpro import EigenProRegressor
    from speechkern.models.dnn import DNNRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 192)).astype(np.float32)
    Y = rng.uniform(size=(80, 64)).astype(np.float32)
    stats = FeatureStats(mean=np.zeros(64), std=np.ones(64))
    if kind == "dnn":
        bands = [(0, 64)]
        estimators = [DNNRegressor(hidden=[8], epochs=1, batch_size=40, device="cpu").fit(X, Y, X[:10], Y[:10])]
    else:
        bands = split_bands(64, 2)
        estimators = [EigenProRegressor(epochs=1, device="cpu").fit(X, Y[:, lo:hi]) for lo, hi in bands]
    return MaskModel(kind, FEATURES, TargetConfig(), stats, bands, estimators)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("kernel", "dnn"):
        _mask_model(kind).save(root / kind)
        out[kind] = root / kind
    return out


def _edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def _drop_config_copy(folder: Path) -> None:
    """The weights without the saved copy of config.json, as an older speechkern wrote them."""
    tensors = load_file(str(folder / "weights.safetensors"))
    save_file(tensors, str(folder / "weights.safetensors"))


def _set(path: str, value):
    def edit(config):
        node = config
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[keys[-1]] = value

    return edit


def _truncate(folder: Path) -> None:
    path = folder / "weights.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = [
    # (model, damage, keep the config copy in the weights, expected part of the message)
    ("kernel", lambda f: (f / "weights.safetensors").unlink(), True, "weights.safetensors is missing"),
    ("kernel", _truncate, True, "weights.safetensors is damaged or truncated"),
    ("kernel", lambda f: ((f / "weights.safetensors").unlink(), (f / "weights.safetensors").mkdir()), True,
     "weights.safetensors is a folder, not a file"),
    ("dnn", lambda f: ((f / "config.json").unlink(), (f / "config.json").mkdir()), True,
     "config.json is a folder, not a file"),
    # The version this speechkern writes, with a format number beyond its own: not newer, edited.
    ("kernel", lambda f: _edit_config(f, _set("format_version", 999)), True,
     "model format v999 is beyond the v4 that speechkern"),
    ("dnn", lambda f: (f / "config.json").write_text('{"kind": "dnn",'), True, "config.json is not valid JSON"),
    ("dnn", lambda f: (f / "config.json").write_text("[1, 2]"), True, "holds no JSON object"),
    ("kernel", lambda f: _edit_config(f, _set("features.sr", 22050)), True,
     "config.json was edited after training (features.sr = 22050, trained with 16000)"),
    ("kernel", lambda f: _edit_config(f, _set("surprise", 1)), True, "surprise (added)"),
    ("dnn", lambda f: _edit_config(f, _set("estimators.0.config.params.hidden", [200000])), True,
     "estimators.0.config.params.hidden"),
    # Without the saved copy (an older model folder) the configuration is checked against the weights' shapes.
    ("kernel", lambda f: _edit_config(f, _set("features.sr", 8000)), False, "features: sr = 8000 Hz puts the Nyquist"),
    ("kernel", lambda f: _edit_config(f, _set("features.bogus", 3)), False, "unknown key 'features.bogus'"),
    ("kernel", lambda f: _edit_config(f, _set("features.context", 4)), False,
     "centres are (80, 192), but the features give 576 inputs per frame"),
    ("kernel", lambda f: _edit_config(f, _set("features.kind", "mfcc")), False,
     "stats.mean is (64,), but the features give 31 values per frame"),
    ("kernel", lambda f: _edit_config(f, _set("kind", "dnn")), False, "estimator 0 is of kind 'eigenpro'"),
    ("kernel", lambda f: _edit_config(f, _set("bands", [[0, 40], [30, 64]])), False, "contiguous blocks"),
    ("kernel", lambda f: _edit_config(f, _set("target.domain", "stft")), False, "161 mask channels"),
    ("kernel", lambda f: _edit_config(f, _set("estimators.1.config.n_outputs", 7)), False,
     "do not match the weights"),
    ("dnn", lambda f: _edit_config(f, _set("estimators.0.config.params.hidden", [200000])), False,
     "layer 1 weight is (8, 192) in the weights, but params.hidden = [200000] asks for (200000, 192)"),
    ("dnn", lambda f: _edit_config(f, _set("estimators.0.config.params.hidden", [8, 8])), False,
     "layer 2 weight is (64, 8)"),
    ("dnn", lambda f: _edit_config(f, _set("estimators.0.config.params.hidden", "big")), False,
     'params.hidden = "big"'),
    ("dnn", lambda f: _edit_config(f, _set("estimators.0.config.params.dropout", "x")), False, "cannot be rebuilt"),
    ("dnn", lambda f: _edit_config(f, _set("estimators.0.tensors", {"0.weight": "nope"})), False,
     "names tensors that weights.safetensors does not hold"),
]  # fmt: skip


@pytest.mark.parametrize("kind, damage, keep_copy, expected", DAMAGE)
def test_damaged_model_folder_gives_one_line(saved_models, tmp_path, kind, damage, keep_copy, expected):
    folder = tmp_path / kind
    shutil.copytree(saved_models[kind], folder)
    if not keep_copy:
        _drop_config_copy(folder)
    damage(folder)
    with pytest.raises(SpeechkernError) as err:
        MaskModel.load(folder)
    message = str(err.value)
    assert message.startswith(f"{folder}: ") and "\n" not in message, message
    assert expected in message, message
    assert "retrain" in message or "restore" in message, message


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_file_where_a_model_folder_goes_is_named_as_a_file_and_kept(saved_models, tmp_path, overwrite):
    """Without overwrite it was 'a model is there already; pass overwrite=True', which cannot help."""
    from speechkern.models.io import save_model

    (tmp_path / "model").write_text("notes")
    with pytest.raises(SpeechkernError, match=r"model: is a file, not a model folder; .*move the file away$"):
        save_model(MaskModel.load(saved_models["dnn"]), tmp_path / "model", overwrite=overwrite)
    assert (tmp_path / "model").read_text() == "notes"


def test_intact_model_folders_load_with_the_usual_modes(saved_models):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    for kind, folder in saved_models.items():
        model = MaskModel.load(folder)
        assert model.kind == kind and model.n_units == 64
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
        for f in folder.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
        copy = folder.parent / f"{kind}-old"
        shutil.copytree(folder, copy)
        _drop_config_copy(copy)  # an older model folder, without the copy, still loads
        X = np.random.default_rng(1).standard_normal((3, 192)).astype(np.float32)
        np.testing.assert_array_equal(MaskModel.load(copy).predict(X), model.predict(X))


def test_damaged_model_on_the_command_line_is_one_line(saved_models, tmp_path, capsys):
    from speechkern import audio
    from speechkern_cli.main import main

    folder = tmp_path / "dnn"
    shutil.copytree(saved_models["dnn"], folder)
    _edit_config(folder, _set("estimators.0.config.params.hidden", [200000]))
    audio.save(tmp_path / "noisy.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(SystemExit) as exit_:
        main(["enhance", str(tmp_path / "noisy.wav"), "--model", str(folder), "-q"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder}: config.json was edited"), err


# -- reproducible resume -------------------------------------------------------------------------------------


def _dnn_problem():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 6)).astype(np.float32)
    Y = (1 / (1 + np.exp(-X[:, :2] * 2))).astype(np.float32)
    return X, Y


@pytest.mark.parametrize("optimizer", ["adam", "adagrad-momentum"])
def test_dnn_resumed_after_an_interrupt_matches_the_uninterrupted_run(tmp_path, monkeypatch, optimizer):
    import torch

    import speechkern.models.dnn as dnn

    X, Y = _dnn_problem()
    params = {"hidden": [16, 16], "dropout": 0.3, "epochs": 7, "batch_size": 50, "patience": 10, "device": "cpu",
              "optimizer": optimizer}  # fmt: skip
    whole = dnn.DNNRegressor(**params).fit(X, Y, checkpoint=tmp_path / "whole")

    real_report = dnn.report

    def interrupt_at_epoch_3(task, completed, *args, **kwargs):
        if completed == 3:  # the report comes before the epoch's checkpoint: epochs 1 and 2 are kept
            raise KeyboardInterrupt
        real_report(task, completed, *args, **kwargs)

    monkeypatch.setattr(dnn, "report", interrupt_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        dnn.DNNRegressor(**params).fit(X, Y, checkpoint=tmp_path / "cut")
    monkeypatch.setattr(dnn, "report", real_report)
    torch.manual_seed(1234)  # whatever the process did in between must not matter
    resumed = dnn.DNNRegressor(**params).fit(X, Y, checkpoint=tmp_path / "cut")

    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4, 5, 6, 7]
    assert [h["val_mse"] for h in resumed.history_] == [h["val_mse"] for h in whole.history_]
    for key, value in whole.network_.state_dict().items():
        assert torch.equal(value, resumed.network_.state_dict()[key]), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.safetensors", "whole.safetensors"]


def test_damaged_dnn_checkpoint_starts_again(tmp_path, caplog):
    from speechkern.models.dnn import DNNRegressor

    X, Y = _dnn_problem()
    params = {"hidden": [8], "epochs": 2, "batch_size": 64, "device": "cpu", "optimizer": "adagrad-momentum"}
    fresh = DNNRegressor(**params).fit(X, Y)
    (tmp_path / "ckpt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
    again = DNNRegressor(**params).fit(X, Y, checkpoint=tmp_path / "ckpt")
    assert "checkpoint is unreadable" in caplog.text
    assert [h["val_mse"] for h in again.history_] == [h["val_mse"] for h in fresh.history_]


# -- resume, interrupts and run folders ----------------------------------------------------------------------

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _modes_ok(root: Path) -> None:
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == want, path
        assert not path.name.endswith((".part", ".lock")), path
        if path.is_dir():
            assert any(path.iterdir()), f"empty folder {path}"


def test_resume_retrains_models_and_parts_that_do_not_load(tiny_run, tmp_path, caplog, monkeypatch):
    import logging

    import speechkern.pipeline as pipeline
    from speechkern.pipeline import train

    recipe, root, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    kernel = MaskModel.load(run / "models" / "kernel")
    parts = run / "models" / ".kernel-parts" / "all"
    parts.mkdir(parents=True)
    for b in (0, 1):  # band 1 finished intact, band 0's weights truncated
        kernel.estimators[b].save(parts / f"band-{b}")
        (parts / f"band-{b}.json").write_text(json.dumps(kernel.info["bands"][b]))
    (parts / "band-0").write_bytes((parts / "band-0").read_bytes()[:100])
    shutil.rmtree(run / "models" / "kernel")
    (run / "models" / "dnn" / "weights.safetensors").unlink()  # "kept from an earlier run" with no weights
    (run / "models" / ".dnn.k2j_x9q1").mkdir()  # what a process killed while writing leaves behind
    (run / "models" / ".dnn.k2j_x9q1" / "config.json").write_text("{}")
    (parts / ".band-1.json.abcd1234.part").write_text("")
    (run / ".training_time.json.z9y8x7w6.part").write_text("")

    # The machine's free memory has changed since: the retrained band keeps the finished band's budget and solver.
    monkeypatch.setattr(pipeline, "kernel_budget_bytes", lambda *args: 3 * 2**30 + 12345)
    with caplog.at_level(logging.INFO, logger="speechkern"):
        summary = train(recipe, run, cache_dir=root / "cache", resume=True, models=["kernel", "dnn"])
    assert summary.skipped == []
    assert "dnn for all: the model kept from an earlier run does not load" in caplog.text
    assert "weights.safetensors is missing" in caplog.text
    assert "kernel all band 1/2: the part kept from an earlier run does not load" in caplog.text
    assert "kernel all band 2/2: finished in an earlier run, kept" in caplog.text
    again = MaskModel.load(run / "models" / "kernel")
    for key in ("memory_budget_gb", "leaf_size"):  # the solver chosen when the first band was trained
        assert again.estimators[0].get_params()[key] == kernel.estimators[1].get_params()[key]
    assert kernel.estimators[1].memory_budget_gb != (3 * 2**30 + 12345) / 2**30
    X = np.random.default_rng(0).standard_normal((4, 246 * 3)).astype(np.float32)
    np.testing.assert_array_equal(again.estimators[1].predict(X), kernel.estimators[1].predict(X))
    MaskModel.load(run / "models" / "dnn")
    assert not (run / "models" / ".kernel-parts").exists() and not (run / "models" / ".dnn-checkpoint").exists()
    assert not list(tmp_path.glob(".*.lock"))
    _modes_ok(run)


def test_evaluate_names_the_models_an_interrupted_run_lacks(tiny_run, tmp_path, caplog):
    from speechkern.evaluate import evaluate

    _, root, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, ignore=shutil.ignore_patterns("report"))
    shutil.rmtree(run / "models" / "dnn")
    ev = evaluate(run, workers=1, cache_dir=root / "cache", limit=1, examples=0)
    assert ev.missing == ["dnn/all"]
    assert f"{run}: the run is incomplete, no model for dnn/all" in caplog.text
    assert f"resume the run {run} (resume=True)" in caplog.text
    assert {r["system"] for r in ev.rows} == {"noisy", "ideal", "kernel"}


@pytest.mark.parametrize(("workers", "limit", "started"), [(99_999, 1, None), (99_999, 2, 2), (2, 2, 2)])
def test_evaluate_starts_no_more_scoring_processes_than_files(tiny_run, monkeypatch, workers, limit, started):
    """evaluate --workers 99999 --limit 1 asked joblib for 99 999 processes to score one file: it hung, starting
    them, until killed (and leaked hundreds of semaphores)."""
    import joblib

    from speechkern.evaluate import evaluate

    asked = []

    class Recording(joblib.Parallel):
        def __init__(self, n_jobs=None, **kwargs):
            asked.append(n_jobs)
            super().__init__(n_jobs=1, **{**kwargs, "backend": "sequential"})

    monkeypatch.setattr(joblib, "Parallel", Recording)
    _, root, _ = tiny_run
    ev = evaluate(root / "run", workers=workers, cache_dir=root / "cache", limit=limit, examples=0)
    assert len(ev.files) == limit
    assert asked == ([] if started is None else [started])


def test_evaluate_names_a_model_whose_config_is_a_folder(tiny_run, tmp_path):
    """A model folder whose config.json is a folder was skipped as no model, so a run whose only model it was said
    "no trained models in models/"; the load now names the damaged file."""
    from speechkern.evaluate import evaluate

    _, root, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, ignore=shutil.ignore_patterns("report"))
    shutil.rmtree(run / "models" / "dnn")
    (run / "models" / "kernel" / "config.json").unlink()
    (run / "models" / "kernel" / "config.json").mkdir()
    with pytest.raises(SpeechkernError, match=r"models/kernel: config.json is a folder, not a file"):
        evaluate(run, workers=1, cache_dir=root / "cache", limit=1, examples=0)


def test_ctrl_c_in_train_prints_the_resume_command_and_logs_it(tmp_path, capsys, monkeypatch):
    import speechkern.pipeline as pipeline

    def interrupted(*args, **kwargs):
        pipeline.logger.info("training started")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_train_locked", interrupted)
    run = tmp_path / "run"
    code, _, err = _cli(["train", str(RECIPES / "demo"), "--set", "kernel.subbands=2", "--out", str(run), "-q"], capsys)
    assert code == 130
    assert "Traceback" not in err
    hint = f"speechkern train {RECIPES / 'demo'} --set=kernel.subbands=2 --out {run} --resume"
    assert f"interrupted; continue with: {hint}" in err, err
    assert "interrupted: finished models, subband parts and DNN epochs are kept" in (run / "train.log").read_text()
    assert not list(tmp_path.glob(".*.lock"))


def test_ctrl_c_while_the_command_line_loads_is_one_line():
    import signal
    import subprocess
    import sys

    # A KeyboardInterrupt escaping at the top level, as when Ctrl-C hits while modules are imported.
    code = "import speechkern_cli, os, signal, time; os.kill(os.getpid(), signal.SIGINT); time.sleep(10)"
    # SIGINT's default disposition in the child: a shell that starts jobs in the background (nohup, `&`) passes
    # it on ignored, and Python then never turns Ctrl-C into KeyboardInterrupt.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    assert proc.returncode == 130, proc  # Python's own way out, by SIGINT, is status -2 to a parent process
    assert "Traceback" not in proc.stderr and proc.stderr.strip() == "interrupted", proc.stderr


@pytest.mark.parametrize("when", ["threads", "atexit"])
def test_ctrl_c_after_the_command_finished_is_one_line_and_130(tmp_path, when):
    """Ctrl-C while Python joined threads or ran its exit functions, after the work, printed a KeyboardInterrupt
    traceback ('Exception ignored in ...') and exited 0; once Python had restored SIGINT's default handler, it
    killed the process: status -2 and no word. The output written stays."""
    import signal
    import subprocess
    import sys

    from speechkern import audio

    rng = np.random.default_rng(0)
    audio.save(tmp_path / "c.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    audio.save(tmp_path / "n.wav", (0.1 * rng.standard_normal(32000)).astype(np.float32), 16000)
    late = {  # a SIGINT once the command has returned: while the threads are joined, or in an exit function
        "threads": "threading.Thread(target=lambda: (wait(lambda: not threading.main_thread().is_alive()), "
                   "os.kill(os.getpid(), signal.SIGINT), time.sleep(0.5))).start()",
        "atexit": "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.5)))",
    }[when]  # fmt: skip
    code = f"""
import atexit, os, signal, sys, threading, time
from speechkern_cli.main import main
def wait(ready):
    while not ready():
        time.sleep(0.001)
{late}
sys.argv = ["speechkern", "mix", "c.wav", "n.wav", "--snr", "0", "-o", "o.wav"]
sys.exit(main())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    assert proc.returncode == 130, proc
    assert proc.stderr == "interrupted after the command had finished; its outputs are complete\n", proc.stderr
    assert proc.stdout.startswith("wrote o.wav: 1.00 s") and audio.info(tmp_path / "o.wav").frames == 16000


def test_unusable_cache_folder_warns_and_carries_on(tmp_path, monkeypatch, caplog):
    from speechkern.cache import ArrayCache, usable_cache_dir

    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("SPEECHKERN_CACHE", str(not_a_folder))
    assert usable_cache_dir("default") is None
    assert f"{not_a_folder} ($SPEECHKERN_CACHE) cannot hold the feature cache" in caplog.text
    assert "cache_dir=None" in caplog.text
    assert usable_cache_dir(None) is None and usable_cache_dir(tmp_path / "ok") == tmp_path / "ok"
    # a cache whose writes fail (the folder turned into a file under it) still returns, and warns once
    cache = ArrayCache(tmp_path / "ok")
    (tmp_path / "ok" / "features").write_text("in the way")
    cache.put("ab" * 32, {"x": np.zeros(3, np.float32)})
    cache.put("cd" * 32, {"x": np.zeros(3, np.float32)})
    assert caplog.text.count("cannot write to the feature cache") == 1
    assert cache.get("ab" * 32) is None


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "kernel.subbands=100",
            "kernel.subbands, features.n_channels, target.domain: 100 subbands, but the "
            "cochleagram mask has 64 channels",
        ),
        ("data.sr=8000", "data.sr, features.sr: 8000 Hz and 16000 Hz; set both to the same rate"),
        ("data.snrs=[nan]", "'data.snrs.0' = nan: Input should be a finite number"),
        ("kernel.bandwidth=inf", "'kernel.bandwidth' = inf"),
        ("kernel.sigma_low=2", "set both, with 0 < sigma_low < sigma_high"),
        ("dnn.hidden=[64,0]", "'dnn.hidden.1' = 0"),
        ("kernel.gammas=[3.0]", "'kernel.gammas.0' = 3.0"),
        ("train.models=[]", "'train.models' = []"),
        ('data.conditions=["ssn@loud"]', "'data.conditions.0' = 'ssn@loud'"),
        # built only at the DNN's turn, after the features and the kernel: an allocation error, or swap
        ("dnn.hidden=[100000,100000]", "dnn.hidden: [100000, 100000]: the network's 1.01e+10 weights need about"),
    ],
)
def test_recipe_values_are_checked_at_load(override, expected):
    from speechkern.recipe import load_recipe

    with pytest.raises(SpeechkernError) as err:
        load_recipe(RECIPES / "demo", [override])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_bad_options_stop_before_a_run_directory_is_made(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = _cli(["train", str(RECIPES / "demo"), "--set", "kernel.subbands=100", "--out", str(run)], capsys)
    assert code == 2 and err.startswith("error: ") and "kernel.subbands" in err and len(err.splitlines()) == 1
    assert not run.exists() and not list(tmp_path.iterdir())
    for argv in (["enhance", "x.wav", "--chunk-seconds", "0"], ["enhance", "x.wav", "--chunk-seconds", "-3"],
                 ["evaluate", str(run), "--limit", "-1"]):  # fmt: skip
        code, _, err = _cli(argv, capsys)
        assert code == 2 and "Traceback" not in err and ("--chunk-seconds" in err or "--limit" in err), err


def test_messages_name_the_option_and_the_file(saved_models, tmp_path, capsys):
    import soundfile as sf

    from speechkern import audio

    code, _, err = _cli(["oracle", "c.wav", "n.wav", "--snr", "0", "--target", "xyz"], capsys)
    assert code == 2 and err.startswith("error: --target 'xyz'"), err

    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    y = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    audio.save(good, y, 16000)
    y[100] = np.nan
    sf.write(bad, y, 16000, subtype="FLOAT")
    model = str(saved_models["dnn"])
    code, _, err = _cli(["enhance", str(bad), str(good), "--model", model, "-o", str(tmp_path / "out"), "-q"], capsys)
    assert code == 2 and f"{bad}: " in err and "NaN" in err, err
    assert (tmp_path / "out" / "good_enhanced.wav").is_file()
    code, _, err = _cli(["enhance", str(bad), "--model", model, "-o", str(tmp_path / "one.wav")], capsys)
    assert code == 2 and err.startswith(f"error: {bad}: ") and "NaN" in err, err


def test_run_files_cut_short_by_a_killed_process_are_skipped(tmp_path, caplog):
    from speechkern.autotune import Evaluation, EvaluationLog
    from speechkern.pipeline import _read_timings

    log = EvaluationLog(tmp_path / "autotune.jsonl")
    log.append(Evaluation(0, 1.0, 2.5, 3, 0.04, 1.5))
    log.append(Evaluation(1, 2.0, 5.0, 4, 0.05, 1.5))
    with open(tmp_path / "autotune.jsonl", "a") as f:
        f.write('{"subband": 0, "gamma": 1.0, "sig')  # killed mid-write
    again = EvaluationLog(tmp_path / "autotune.jsonl")
    assert again.rows == log.rows
    assert "autotune.jsonl:3: unreadable evaluation skipped" in caplog.text
    (tmp_path / "training_time.json").write_text('{"rows": [{"model": "kernel"')
    assert _read_timings(tmp_path) == []
    assert "training_time.json: unreadable" in caplog.text


def test_kept_subband_parts_are_checked_against_the_kernel_inputs(tmp_path, caplog):
    from speechkern.eigenpro import EigenProRegressor
    from speechkern.pipeline import TrainingSet, _kept_band, _KernelUnit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5)).astype(np.float32)  # e.g. inputs after a dimension-reducing transform
    Y = rng.uniform(size=(60, 4)).astype(np.float32)
    stats = FeatureStats(mean=np.zeros(5), std=np.ones(5))
    unit = _KernelUnit(TrainingSet("all", X, Y, X, Y, stats), "kernel", [(0, 2), (2, 4)], tmp_path / "parts")
    for b, (lo, hi) in enumerate(unit.bands):
        EigenProRegressor(epochs=1, device="cpu").fit(X if b == 0 else X[:, :3], Y[:, lo:hi]).save(
            unit.parts / f"band-{b}"
        )
        (unit.parts / f"band-{b}.json").write_text(json.dumps({"band": [lo, hi]}))
    assert _kept_band(unit, 0) and unit.info[0] == {"band": [0, 2]}
    assert not _kept_band(unit, 1) and unit.pending() == [1]
    assert "band 2/2: the part kept from an earlier run does not load (it maps 3 inputs to 2 channels" in caplog.text


def test_a_model_that_does_not_fit_the_device_is_not_called_damaged(monkeypatch):
    """Out of device memory while the estimators are built: one line naming the folder, the size and the remedy,
    not "cannot be rebuilt ... restore the folder" (the folder is sound)."""
    import torch

    from speechkern.eigenpro import EigenProRegressor
    from speechkern.models.io import MaskModel
    from speechkern.models.select import SHIPPED

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.00 MiB")

    monkeypatch.setattr(EigenProRegressor, "from_state", classmethod(full))
    with pytest.raises(SpeechkernError) as caught:
        MaskModel.load(SHIPPED)
    message = str(caught.value)
    assert (
        message.startswith(f"{SHIPPED}: the model (")
        and "MiB of weights) does not fit the free memory of cpu" in message
    )
    assert "device='cpu'" in message and "damaged" not in message and "restore" not in message


def test_evaluate_goes_by_the_models_the_run_trained_not_the_recipes(tmp_path, capsys, caplog, monkeypatch):
    """A run trained with --models kernel (the recipe names kernel and dnn) was called incomplete, 'no model for
    dnn/all'; its own train.log, training_time.json and models/ say what it set out to train."""
    from conftest import RECIPES, TINY
    from conftest import run_cli as run

    from speechkern.evaluate import evaluate

    monkeypatch.chdir(tmp_path)  # train notes the run in ./runs/index.txt
    argv = ["train", str(RECIPES / "demo"), *(f"--set={s}" for s in TINY), "--models", "kernel", "--no-cache", "-q"]
    code, _, err = run([*argv, "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    ev = evaluate(tmp_path / "run", workers=1, cache_dir=None, limit=1, examples=0)
    assert ev.missing == [] and "incomplete" not in caplog.text
    from speechkern.evaluate import missing_models, run_models

    shutil.rmtree(tmp_path / "run" / "models" / "kernel")  # what it trained, lost since: still named
    assert run_models(tmp_path / "run") == ["kernel"]
    assert missing_models(tmp_path / "run", ev.recipe, {}, ["ssn_0dB"]) == ["kernel/all"]
    # a damaged model of it is to be retrained with --models kernel: resuming without trained the DNN too
    (tmp_path / "run" / "models" / "kernel").mkdir()
    (tmp_path / "run" / "models" / "kernel" / "config.json").write_text("{")
    code, _, err = run(["evaluate", str(tmp_path / "run"), "-q"], capsys)
    assert code == 2 and err.rstrip().endswith(f"`speechkern train {tmp_path}/run/recipe.toml --out {tmp_path}/run "
                                               "--resume --models kernel`"), err  # fmt: skip
