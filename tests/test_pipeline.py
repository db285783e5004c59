"""The whole chain on a tiny demo run: train (kernel + DNN) → resume rules → evaluate → report → enhance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speechkern import audio
from speechkern.errors import SpeechkernError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_train_writes_the_run_directory(tiny_run):
    recipe, root, summary = tiny_run
    run = root / "run"
    for rel in ("recipe.toml", "manifests/train.jsonl", "manifests/test.jsonl", "models/kernel/config.json",
                "models/kernel/weights.safetensors", "models/dnn/config.json", "training_time.md",
                "training_time.csv", "training_time.json", "noises/ssn.wav", "noises/babble.wav"):  # fmt: skip
        assert (run / rel).is_file(), rel
    assert {t.model for t in summary.timings} == {"kernel", "dnn"}
    assert not (run / "models" / ".kernel-parts").exists() or not any((run / "models" / ".kernel-parts").iterdir())
    config = json.loads((run / "models/kernel/config.json").read_text())
    assert config["bands"] == [[0, 32], [32, 64]]
    assert config["features"]["context"] == 1


def test_existing_run_is_refused_without_a_flag(tiny_run):
    from speechkern.pipeline import train

    recipe, root, _ = tiny_run
    with pytest.raises(SpeechkernError, match="resume=True .* overwrite=True"):
        train(recipe, root / "run", cache_dir=root / "cache")
    changed = recipe.model_copy(deep=True)
    changed.kernel.epochs = 3
    with pytest.raises(SpeechkernError, match="kernel.epochs differs"):
        train(changed, root / "run", cache_dir=root / "cache", resume=True)
    # the same recipe resumes and keeps both finished models
    again = train(recipe, root / "run", cache_dir=root / "cache", resume=True)
    assert sorted(again.skipped) == ["dnn/all", "kernel/all"]


def test_subband_predictions_reassemble_in_channel_order(tiny_run):
    from speechkern.models.io import MaskModel

    _, root, _ = tiny_run
    model = MaskModel.load(root / "run" / "models" / "kernel")
    X = np.random.default_rng(0).standard_normal((5, model.estimators[0].n_features_in_)).astype(np.float32)
    parts = [np.clip(est.predict(X), 0, 1) for est in model.estimators]
    np.testing.assert_allclose(model.predict(X), np.concatenate(parts, axis=1), atol=1e-6)
    assert model.predict(X).shape == (5, 64)


def test_evaluate_and_report(tiny_run, tiny_report):
    from speechkern.report import write_report

    _, root, _ = tiny_run
    ev, out = tiny_report
    systems = {r["system"] for r in ev.rows}
    assert systems == {"noisy", "ideal", "kernel", "dnn"}
    conditions = {r["condition"] for r in ev.rows}
    assert conditions == {"ssn_0dB", "babble_0dB", "all"}
    ideal = next(r for r in ev.rows if r["system"] == "ideal" and r["condition"] == "all")
    noisy = next(r for r in ev.rows if r["system"] == "noisy" and r["condition"] == "all")
    assert ideal["stoi"] > noisy["stoi"] + 0.1
    for row in ev.rows:
        assert {"stoi", "estoi", "pesq", "si_sdr"} <= set(row)
    for rel in ("results.md", "results.csv", "results.json", "files.csv", "channel_mse.png", "example-0.png",
                "index.html", "audio/example-0/noisy.wav", "audio/example-0/kernel.wav"):  # fmt: skip
        assert (out / rel).is_file(), rel
    with pytest.raises(SpeechkernError, match="overwrite=True"):
        write_report(ev, root / "run")


def test_enhance_keeps_rate_length_and_channels(tiny_run, tmp_path):
    from speechkern.enhance import enhance_file
    from speechkern.models.io import MaskModel

    _, root, _ = tiny_run
    model = MaskModel.load(root / "run" / "models" / "kernel")
    rng = np.random.default_rng(1)
    stereo = (rng.standard_normal((2, 22050 * 2)) * 0.05).astype(np.float32)
    audio.save(tmp_path / "in.wav", stereo, 22050)
    result = enhance_file(model, tmp_path / "in.wav", tmp_path / "out.wav", per_channel=True)
    y, sr = audio.load(tmp_path / "out.wav", sr=None, mono=False)
    assert sr == 22050 and y.shape == stereo.shape and result.channels == 2
    with pytest.raises(SpeechkernError, match="exists already"):
        enhance_file(model, tmp_path / "in.wav", tmp_path / "out.wav")
    with pytest.raises(SpeechkernError, match="is the input itself"):
        enhance_file(model, tmp_path / "in.wav", tmp_path / "in.wav", overwrite=True)


def test_chunked_and_whole_enhancement_agree(tiny_run):
    from speechkern.enhance import enhance_signal
    from speechkern.models.io import MaskModel

    _, root, _ = tiny_run
    model = MaskModel.load(root / "run" / "models" / "dnn")
    y, _ = audio.load(root / "run" / "noises" / "babble.wav")
    y = y[: 16000 * 8]
    whole = enhance_signal(model, y, chunk_s=60.0)
    chunked = enhance_signal(model, y, chunk_s=2.0, margin_s=0.5)
    err = np.sqrt(np.mean((whole - chunked) ** 2)) / np.sqrt(np.mean(whole**2))
    assert err < 1e-3, f"chunk seams: relative error {err:.2e}"


def test_enhance_folder_reports_unreadable_file_and_goes_on(tiny_run, tmp_path, capsys):
    from speechkern_cli.main import main

    _, root, _ = tiny_run
    folder = tmp_path / "in"
    rng = np.random.default_rng(2)
    for name in ("a.wav", "b.flac"):
        audio.save(folder / name, (rng.standard_normal(16000) * 0.05).astype(np.float32), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF....not really a wave file")
    with pytest.raises(SystemExit) as exit_:
        main(["enhance", str(folder), "--model", str(root / "run"), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "broken.wav" in err and "1 of 3 files could not be enhanced" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_enhanced.wav", "b_enhanced.flac"]


def test_compact_leaves_from_the_recipe_reach_the_model_file_and_enhance(tiny_run, tmp_path):
    """kernel.leaf_centers and kernel.centers_dtype travel from the recipe to each leaf's solve and the file."""
    from safetensors.torch import load_file

    from speechkern.enhance import enhance_signal
    from speechkern.models.io import MaskModel
    from speechkern.pipeline import train

    recipe, root, _ = tiny_run
    compact = recipe.model_copy(deep=True)
    compact.kernel.solver, compact.kernel.leaf_size, compact.kernel.leaf_centers = "local", 150, 40
    compact.kernel.centers_dtype, compact.kernel.autotune = "float16", False
    train(compact, tmp_path / "run", cache_dir=root / "cache", models=["kernel"])
    folder = tmp_path / "run" / "models" / "kernel"
    stored = load_file(str(folder / "weights.safetensors"))
    centres = [v for k, v in stored.items() if k.endswith(".centers")]
    assert len(centres) == 1 and centres[0].dtype.is_floating_point and centres[0].element_size() == 2
    assert len(centres[0]) == 3 * 4 * 40  # 600 frames → 3 trees (the default) of 4 leaves, each keeping 40 centres
    model = MaskModel.load(folder)
    assert all(e.leaf_centers == 40 and e.centers_dtype == "float16" and e.n_trees_ == 3 for e in model.estimators)
    y, _ = audio.load(root / "run" / "noises" / "babble.wav")
    out = enhance_signal(model, y[:16000])
    assert out.shape == (16000,) and np.isfinite(out).all()


def test_feature_workers_are_capped_at_the_chunks(tiny_run, monkeypatch):
    """train.workers=100000 (below a C int, so allowed) started that many loky processes for a few chunks; 8 are
    asked here, for 3 chunks."""
    import joblib

    from speechkern import dataset, mixtures

    recipe, root, _ = tiny_run
    rows = mixtures.read_manifest(root / "run" / "manifests" / "val.jsonl")[:2] * 9  # 18 mixtures: 3 chunks of 8
    asked = []

    class Recorded(joblib.Parallel):
        def __init__(self, n_jobs=None, **kwargs):
            asked.append(n_jobs)
            super().__init__(n_jobs=n_jobs, **kwargs)

    monkeypatch.setattr(joblib, "Parallel", Recorded)
    data = dataset.compute_frames(rows, recipe.features, recipe.target, root / "cache", workers=8)
    assert asked == [3] and len(data.mixtures) == 18
