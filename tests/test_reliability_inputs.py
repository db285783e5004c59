"""Reliability, round 3 (issue 27): never a traceback, a crash or a hang, and sizes bounded by the file rather than
by its claims. PESQ on long signals, FIFOs, absurd sample rates, model files that ask for too much memory, recipes
nested deep or holding NUL and emoji, train's run directory, a full cache disk, and `losses --help` start-up."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import RECIPES
from conftest import run_cli as run

from speechkern import audio, limits
from speechkern.errors import SpeechkernError
from speechkern.recipe import load_recipe

SHIPPED = Path(__file__).resolve().parents[1] / "speechkern" / "pretrained" / "general"
CLI = Path(sys.executable).with_name("speechkern")


@pytest.fixture(scope="module")
def model():
    from speechkern.models.io import MaskModel

    return MaskModel.load(SHIPPED)


# -- PESQ --------------------------------------------------------------------------------------------------------


PESQ_CRASH = """
import json, numpy as np
from speechkern.metrics import pesq
t = np.arange(30 * 16000) / 16000  # 60 bursts of 0.25 s: more utterances than the pesq C code's table holds
ref = (np.random.default_rng(0).standard_normal(len(t)) * 0.05 * ((t % 0.5) < 0.25)).astype(np.float32)
print(json.dumps([pesq(ref, ref + 0.001 * ref[::-1], 16000, "wb"), pesq(ref[:80000], ref[:80000], 16000, "wb")]))
"""


def test_a_pesq_crash_gives_nan_and_the_reason_not_a_dead_process():
    done = subprocess.run([sys.executable, "-c", PESQ_CRASH], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr  # the process survives (it died of SIGSEGV in oracle and evaluate)
    (crashed, why), (score, none) = json.loads(done.stdout)
    assert math.isnan(crashed) and why.startswith("the pesq library crashed (SIGSEGV) on this signal")
    assert score > 4 and none == ""  # a signal it can score is scored as before


# -- files that are not what they claim ----------------------------------------------------------------------------


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    code = f"from speechkern import audio; audio.info({str(fifo)!r})"  # in a process of its own: it used to hang
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "SpeechkernError: " + f"{fifo}: is not a regular file (a pipe, device or socket)" in done.stderr
    done = subprocess.run([str(CLI), "enhance", str(fifo), "--model", str(SHIPPED)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2 and "is not a regular file" in done.stderr and "Traceback" not in done.stderr


def test_a_header_claiming_an_absurd_sample_rate_is_refused(tmp_path):
    path = tmp_path / "one_hz.wav"
    sf.write(path, np.zeros(88000, np.float32), 16000)
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", 1)  # sample rate
    data[28:32] = struct.pack("<I", 2)  # byte rate
    path.write_bytes(bytes(data))
    for read in (audio.info, audio.load):
        with pytest.raises(SpeechkernError, match=r"one_hz.wav: its header gives a sample rate of 1 Hz, outside"):
            read(path)


def test_an_output_format_that_cannot_hold_the_rate_is_refused_before_any_work(tmp_path):
    with pytest.raises(SpeechkernError, match=r"x.ogg: OGG files cannot hold 384000 Hz.*name the output .wav"):
        audio.check_holds(tmp_path / "x.ogg", 384000, 1)  # libsndfile's encoder would crash the process
    with pytest.raises(SpeechkernError, match=r"x.mp3: MP3 files .* cannot hold 1 channel\(s\) at 96000 Hz"):
        audio.save(tmp_path / "x.mp3", np.zeros(960, np.float32), 96000)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary path named, nothing left


def test_the_formats_suggested_for_an_output_hold_it(tmp_path):
    """64 channels named .flac were told 'FLAC files cannot hold 64 channel(s); name the output .wav or .flac'."""
    with pytest.raises(SpeechkernError, match=r"x.flac: FLAC files \(PCM_16\) cannot hold 64 channel\(s\) at 16000 "
                       r"Hz; name the output .wav$"):  # fmt: skip
        audio.check_holds(tmp_path / "x.flac", 16000, 64)
    with pytest.raises(SpeechkernError, match=r"x.mp3: .* at 96000 Hz; name the output .wav or .flac$"):
        audio.check_holds(tmp_path / "x.mp3", 96000, 1)


# -- model files bounded by the machine, not by their claims ---------------------------------------------------------


def test_a_model_asking_for_a_huge_context_is_refused_before_it_allocates(model, tmp_path):
    huge = dataclasses.replace(model, feature_config=model.feature_config.model_copy(update={"context": 20000}))
    sizes = limits.block_bytes(huge, 5.0, 1.0)
    assert max(sizes.values()) > 50e9  # 374 · 40 001 inputs per frame × 701 frames, float32, twice
    sf.write(tmp_path / "x.wav", np.zeros(6 * 16000, np.float32), 16000)
    # enhance also widens the block's margins to the context's reach (200 s each side): terabytes
    with pytest.raises(SpeechkernError, match=r"needs about [\d.]+ [GT]B per 5 s block \(features.context = 20000"):
        from speechkern.enhance import enhance_file

        enhance_file(huge, tmp_path / "x.wav", tmp_path / "y.wav", chunk_s=5.0)
    assert not (tmp_path / "y.wav").exists()
    limits.check_model_memory(model, SHIPPED, 30.0, budget=2 * 10**9)  # the shipped model fits 2 GB
    with pytest.raises(SpeechkernError, match="pass a smaller chunk_s"):
        limits.check_model_memory(model, SHIPPED, 600.0, budget=2 * 10**9)


# -- recipes --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.snrs=" + "[" * 3000 + "]" * 3000, r"recipe override data.snrs: the value is nested too deeply"),
        ("name=run\x00x", r"recipe override name=run\\x00x: recipe key 'name' .* NUL"),
        ("data.clean_dir=a\x00b", r"recipe key 'data.clean_dir' .* holds a NUL character"),
        (
            "kernel.subbands=1000",
            r"^recipe override kernel.subbands=1000: recipe key kernel.subbands, "
            r"features.n_channels, target.domain: 1000 subbands",
        ),
    ],
)
def test_odd_recipe_values_give_one_line_naming_their_source(override, expected):
    with pytest.raises(SpeechkernError, match=expected):
        load_recipe(RECIPES / "demo", [override])


def test_a_recipe_nested_thousands_deep_in_the_file_is_one_line(tmp_path):
    (tmp_path / "recipe.toml").write_text("[data]\nsnrs = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(SpeechkernError, match=r"recipe.toml: a value is nested too deeply"):
        load_recipe(tmp_path)


def test_emoji_and_control_characters_survive_the_resolved_recipe():
    text = 'dé 😀 "q" \\ \t\x7f end'
    recipe = load_recipe(RECIPES / "demo", ["name=voix-😀", f"data.clean_dir={text}"])
    again = tomllib.loads(recipe.to_toml())  # what train writes, and resume and evaluate read back
    assert again["name"] == "voix-😀" and again["data"]["clean_dir"] == text


# -- train's run directory, the cache ----------------------------------------------------------------------------


def test_train_into_a_file_or_below_one_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        code, _, err = run(["train", str(RECIPES / "demo"), "--out", str(out)], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "is a file" in err, err


def test_a_run_that_cannot_be_noted_in_the_index_still_finishes(tmp_path, capsys, monkeypatch):
    import types

    import speechkern.models.select as select
    import speechkern.pipeline as pipeline

    def denied(run_dir, root="runs"):
        raise PermissionError(13, "Permission denied", "runs/index.txt")

    monkeypatch.setattr(pipeline, "train", lambda *a, **k: types.SimpleNamespace(timings=[], skipped=[]))
    monkeypatch.setattr(select, "record_run", denied)  # a read-only current folder, after hours of training
    code, _, err = run(["train", str(RECIPES / "demo"), "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 0 and "could not note the run in runs/index.txt (Permission denied)" in err


def test_a_full_disk_under_the_cache_carries_on_uncached(tmp_path, monkeypatch, caplog):
    from safetensors import SafetensorError

    import speechkern.cache as cache

    def full(arrays, path):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(cache, "save_file", full)
    monkeypatch.setattr(cache, "_warned", set())
    store = cache.ArrayCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="speechkern"):
        store.put("ab" * 32, {"x": np.zeros(3)})
    assert store.get("ab" * 32) is None and "carrying on without caching" in caplog.text
    assert not list(tmp_path.rglob("*.part"))


# -- start-up ------------------------------------------------------------------------------------------------------


def test_the_losses_group_loads_without_torch_or_scikit_learn():
    code = "import sys, speechkern_cli.losses; print(sorted({'torch', 'sklearn'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr
