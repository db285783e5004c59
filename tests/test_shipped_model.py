"""The general model shipped inside the package: found without runs/, keeps rate, channels, length and level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from speechkern import audio
from speechkern.errors import SpeechkernError
from speechkern.models.select import SHIPPED, find_model, shipped_model_dir
from speechkern_cli.main import main

ROOT = Path(__file__).resolve().parents[1]
LEVELS_DBFS = (-15.0, -25.0, -35.0, -45.0, -55.0)


def rms_dbfs(y: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(y, dtype=np.float64))))


def noisy_speech(dev_data: Path, snr_db: float = 5.0) -> np.ndarray:
    """A LibriSpeech utterance in a recorded noise from the second half of the file (4 s, 16 kHz)."""
    from speechkern.mixtures import mix_at_snr

    clean = audio.load(sorted((dev_data / "clean" / "librispeech_train-clean-100").glob("*.flac"))[-1])[0][:64000]
    noise = audio.load(dev_data / "noise" / "blanket_ambient" / "city.flac")[0]
    return mix_at_snr(clean, noise[len(noise) // 2 :][: len(clean)], snr_db)[0]


def test_the_shipped_model_is_in_the_package_and_small():
    folder = shipped_model_dir()
    assert folder == SHIPPED and folder.is_relative_to(ROOT / "speechkern")
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert {"config.json", "weights.safetensors", "ATTRIBUTION.md"} <= set(sizes)
    assert sizes["weights.safetensors"] + sizes["config.json"] <= 25 * 2**20
    model, _ = find_model(folder)
    assert model.kind == "kernel" and len(model.bands) == 4


def test_enhance_without_model_or_runs_uses_the_shipped_model(tmp_path, monkeypatch, capsys):
    """A fresh folder (no runs/): 44.1 kHz stereo in, the same rate, channels and length out, and one line saying
    which model was used."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    t = np.arange(int(44100 * 1.5)) / 44100
    tone = 0.1 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    stereo = np.stack([tone + 0.02 * rng.standard_normal(len(t)), tone + 0.02 * rng.standard_normal(len(t))])
    audio.save(tmp_path / "noisy.wav", stereo.astype(np.float32), 44100)
    with pytest.raises(SystemExit) as exit_:
        main(["enhance", "noisy.wav", "--quiet"])
    out = capsys.readouterr().err  # the console writes to stderr
    assert exit_.value.code in (0, None), out
    assert " ".join(out.split()).count("using the shipped general model") == 1  # (the console wraps long lines)
    head = audio.info(tmp_path / "noisy_enhanced.wav")
    assert (head.samplerate, head.channels, head.frames) == (44100, 2, stereo.shape[1])


def test_shipped_model_keeps_the_input_level_from_minus_15_to_minus_55_dbfs(dev_data):
    """Output within 3 dB of the input's level at every level, and the same waveform after level matching."""
    from speechkern.enhance import enhance_signal

    model, _ = find_model(shipped_model_dir())
    noisy = noisy_speech(dev_data)
    outputs = []
    for level in LEVELS_DBFS:
        x = (noisy * 10 ** ((level - rms_dbfs(noisy)) / 20)).astype(np.float32)
        out = enhance_signal(model, x)
        assert abs(rms_dbfs(out) - level) <= 3.0, (level, rms_dbfs(out))
        outputs.append(out * 10 ** (-level / 20))
    for out in outputs[1:]:
        assert np.corrcoef(out, outputs[0])[0, 1] > 0.999


@pytest.mark.slow
def test_a_built_wheel_installs_the_model_and_enhances_outside_the_checkout(tmp_path):
    """Non-editable install: build the wheel, install it into a fresh virtual environment (dependencies from the
    development environment), and enhance a file in an empty folder with no --model."""
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True)  # fmt: skip
    if built.returncode and "bdist_wheel" in built.stderr:
        pytest.skip("this environment's setuptools cannot build a wheel offline (install setuptools>=70 or wheel)")
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("speechkern-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("config.json", "weights.safetensors", "ATTRIBUTION.md"):
        assert f"speechkern/pretrained/general/{name}" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages") and "wt-" not in p and Path(p).is_dir()]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True)  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    audio.save(work / "noisy.wav", (0.05 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32), 16000)
    result = subprocess.run([str(venv / "bin" / "speechkern"), "enhance", "noisy.wav", "--quiet"], cwd=work,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "using the shipped general model" in said and str(venv) in said.replace(" ", "")
    assert audio.info(work / "noisy_enhanced.wav").frames == 24000


def test_the_shipped_model_states_every_feature_setting_and_its_recipe_reproduces_them():
    """A feature setting added later must not silently change what the shipped model computes (its stored
    configuration names every field), and recipes/general trains with exactly the shipped settings."""
    import json

    from speechkern.features import FeatureConfig
    from speechkern.recipe import load_recipe

    config = json.loads((shipped_model_dir() / "config.json").read_text())
    assert set(FeatureConfig.model_fields) <= set(config["features"])
    recipe = load_recipe(ROOT / "recipes" / "general")
    assert recipe.features.model_dump(mode="json") == config["features"]
    assert recipe.target.model_dump(mode="json") == config["target"]


@pytest.mark.parametrize("option", [{"system": "dnn"}, {"condition": "ssn"}])
def test_run_options_on_a_single_model_folder_are_refused(option):
    name, value = next(iter(option.items()))
    with pytest.raises(SpeechkernError, match=f"single model folder, so --{name} {value} does not apply"):
        find_model(shipped_model_dir(), **option)


def test_enhance_matches_the_exact_reference_path(dev_data, monkeypatch):
    """enhance's fast path (FFT gammatone filtering in float32, one distance product per block shared by the four
    subband kernels) gives the signal of the exact path (float64 IIR gammatone sections, each subband estimator's
    own ``predict``) on real noisy speech. Measured ≈ 125 dB SNR; 60 dB leaves room for other BLAS and FFT builds
    while still catching any change of method (a wrong tap, frame or weight costs far more)."""
    from speechkern import features, gammatone
    from speechkern.enhance import apply_mask, enhance_signal
    from speechkern.models.io import MaskModel

    model = MaskModel.load(shipped_model_dir())
    y = noisy_speech(dev_data)
    fast = enhance_signal(model, y)
    monkeypatch.setattr(gammatone, "DEFAULT_METHOD", "sos")
    inputs = model.inputs(features.extract(y, model.feature_config))
    parts = [np.asarray(est.predict(inputs)).reshape(len(inputs), -1) for est in model.estimators]
    exact = apply_mask(y, np.clip(np.concatenate(parts, axis=1), 0.0, 1.0), model)
    snr_db = 10 * np.log10(np.sum(exact.astype(np.float64) ** 2) / np.sum((exact - fast).astype(np.float64) ** 2))
    assert snr_db >= 60.0


def test_the_clean_input_guard_does_not_depend_on_the_blocks(dev_data, tmp_path):
    """25 s of clean speech, then 15 s of it in 0 dB street noise, enhanced in blocks of 10 s and in one block:
    the same output (the guard's weight was decided per block, 0.87, 0.51, 0, 0 against 0 for the whole)."""
    from speechkern.enhance import enhance_file
    from speechkern.mixtures import mix_at_snr

    files = sorted((dev_data / "clean" / "librispeech_train-clean-100").glob("*.flac"))[-12:]
    speech = np.concatenate([audio.load(f)[0] for f in files])[: 40 * 16000]
    noise = audio.load(dev_data / "noise" / "blanket_ambient" / "city.flac")[0]
    noise = np.resize(noise[len(noise) // 2 :], 15 * 16000)
    tail = mix_at_snr(speech[25 * 16000 :], noise, 0.0)[0]
    y = np.concatenate([speech[: 25 * 16000], tail]).astype(np.float32)
    audio.save(tmp_path / "in.wav", y, 16000, subtype="FLOAT")
    model, _ = find_model(SHIPPED)
    for name, chunk_s in (("whole.wav", 60.0), ("blocks.wav", 10.0)):
        enhance_file(model, tmp_path / "in.wav", tmp_path / name, chunk_s=chunk_s)
    whole, blocks = (audio.load(tmp_path / name)[0] for name in ("whole.wav", "blocks.wav"))
    assert len(whole) == len(blocks) == len(y)
    err = np.sqrt(np.mean((whole - blocks) ** 2)) / np.sqrt(np.mean(whole**2))
    assert err < 1e-4, f"blocks of 10 s differ from one block by {err:.2e}"
