"""Damaged inputs and interruptions: one-line errors naming the thing, never a traceback; resumes that are exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
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
    ("dnn", lambda f: (f / "config.json").write_text('{"kind": "dnn",'), True, "config.json is not valid JSON"),
    ("dnn", lambda f: (f / "config.json").write_text("[1, 2]"), True, "holds no JSON object"),
    ("kernel", lambda f: _edit_config(f, _set("features.sr", 22050)), True,
     "config.json was edited after training (features.sr = 22050, trained with 16000)"),
    ("kernel", lambda f: _edit_config(f, _set("surprise", 1)), True, "surprise (added)"),
    ("dnn", lambda f: _edit_config(f, _set("estimators.0.config.params.hidden", [200000])), True,
     "estimators.0.config.params.hidden"),
    # Without the saved copy (an older model folder) the configuration is checked against the weights' shapes.
    ("kernel", lambda f: _edit_config(f, _set("features.sr", 8000)), False, "features: gammatone range"),
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
