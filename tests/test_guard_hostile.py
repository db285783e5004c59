"""Hostile use of the whole-recording clean-input guard and of the attenuation limit: odd block lengths, the
guard's temporary files on a nearly full disk, and the limit in every band, with every target kind."""

from __future__ import annotations

import math
import shutil
import sys
import tempfile

import numpy as np
import pytest
import soundfile as sf
from conftest import RECIPES, TINY

from speechkern import limits, outputs, postfilter
from speechkern.enhance import enhance_file, enhance_signal
from speechkern.errors import SpeechkernError
from speechkern.models.select import SHIPPED as SHIPPED_DIR


@pytest.fixture(scope="module")
def shipped():
    from speechkern.models.select import SHIPPED, find_model

    return find_model(SHIPPED)[0]


@pytest.fixture(scope="module")
def models(tiny_run, shipped, tmp_path_factory):
    """A model of every target kind the demo recipe trains (TINY settings, the kernel only), and the shipped one."""
    from speechkern.models.io import MaskModel
    from speechkern.pipeline import train
    from speechkern.recipe import load_recipe

    found = {"irm-cochleagram": MaskModel.load(tiny_run[1] / "run" / "models" / "kernel"), "shipped": shipped}
    root = tmp_path_factory.mktemp("kinds")
    for kind, domain in (("ibm", "cochleagram"), ("irm", "stft"), ("ibm", "stft")):
        recipe = load_recipe(RECIPES / "demo", [*TINY, f"target.kind={kind}", f"target.domain={domain}"])
        train(recipe, root / f"{kind}-{domain}", cache_dir=root / f"cache-{domain}", models=["kernel"])
        found[f"{kind}-{domain}"] = MaskModel.load(root / f"{kind}-{domain}" / "models" / "kernel")
    return found


def band_db(y: np.ndarray, sr: int, lo_hz: float, hi_hz: float) -> float:
    spectrum = np.fft.rfft(np.asarray(y, dtype=np.float64))
    f = np.fft.rfftfreq(len(y), 1 / sr)
    return 10 * np.log10(np.sum(np.abs(spectrum[(f >= lo_hz) & (f < hi_hz)]) ** 2))


@pytest.mark.parametrize("kind", ["irm-cochleagram", "ibm-cochleagram", "irm-stft", "ibm-stft", "shipped"])
def test_the_attenuation_limit_holds_in_every_band(models, kind, tmp_path):
    """White noise with a 25 Hz hum at 48 kHz: with atten_lim_db = A no band comes out more than A dB down, the
    hum below the gammatone filterbank's lowest channel (50 Hz) and the band above 8 kHz included; A = 0 returns
    the input. (Cochleagram masks removed the hum 13–15 dB at A = 0 and 20 dB at A = 6: the floored mask cannot
    reach what the filterbank does not cover.)"""
    sr = 48000
    t = np.arange(sr) / sr
    rng = np.random.default_rng(5)
    y = (0.05 * rng.standard_normal(sr) + 0.2 * np.sin(2 * np.pi * 25 * t)).astype(np.float32)
    sf.write(tmp_path / "in.wav", y, sr, subtype="FLOAT")
    bands = [(10, 40), (60, 7000), (9000, 20000)]
    for limit in (0.0, 6.0):
        enhance_file(models[kind], tmp_path / "in.wav", tmp_path / "out.wav", overwrite=True,
                     clean_guard=False, atten_lim_db=limit)  # fmt: skip
        out = sf.read(tmp_path / "out.wav", dtype="float32")[0]
        change = {band: band_db(out, sr, *band) - band_db(y, sr, *band) for band in bands}
        assert min(change.values()) >= -limit - 0.5, (limit, change)
        if limit == 0:
            ref = y - y.mean()  # the DC offset is removed first
            assert np.sqrt(np.mean((out - ref) ** 2) / np.mean(ref**2)) < 1e-5


@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0, -1.0, "30", None])
def test_an_odd_chunk_is_refused_in_one_line_by_the_library(shipped, tmp_path, value):
    """enhance_signal let NaN/inf through to int() (ValueError, OverflowError) and took 0 or a negative chunk as
    one hop (a 2 s block per 10 ms kept); a string reached number formatting in both functions, and
    check_model_memory (the CLI's first check) had its own copy of the rule that raised TypeError on one."""
    y = (0.05 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    sf.write(tmp_path / "x.wav", y, 16000)
    want = rf"chunk_s={value!s}: expected a finite number of seconds above 0, such as 30"
    if isinstance(value, float):
        want = rf"chunk_s={value:g}: expected a finite number of seconds above 0, such as 30"
    elif value is not None:
        want = r"chunk_s='30': expected a finite number of seconds above 0, such as 30"
    with pytest.raises(SpeechkernError, match=want):
        enhance_signal(shipped, y, chunk_s=value)
    with pytest.raises(SpeechkernError, match=want):
        enhance_file(shipped, tmp_path / "x.wav", tmp_path / "o.wav", chunk_s=value)
    with pytest.raises(SpeechkernError, match=want):
        limits.check_model_memory(shipped, "the model", value)
    with pytest.raises(SpeechkernError, match=r"margin_s='1': expected seconds of context"):
        enhance_signal(shipped, y, margin_s="1")
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("value", [0.001, 0.5, 0.999])
def test_a_chunk_shorter_than_a_second_is_refused_with_the_reason(shipped, tmp_path, capsys, value):
    """--chunk-seconds 0.001 worked, about 60 times slower, and said nothing: every block carries a second of
    context on each side. The library and the command line refuse it in one line that says why."""
    from conftest import run_cli

    y = (0.05 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    sf.write(tmp_path / "x.wav", y, 16000)
    want = rf"chunk_s={value:g}: expected at least 1 s, such as 30 \(each block is enhanced with about a second"
    with pytest.raises(SpeechkernError, match=want):
        enhance_signal(shipped, y, chunk_s=value)
    with pytest.raises(SpeechkernError, match=want):
        enhance_file(shipped, tmp_path / "x.wav", tmp_path / "o.wav", chunk_s=value)
    code, _, err = run_cli(["enhance", str(tmp_path / "x.wav"), "--model", str(SHIPPED_DIR), "-o",
                            str(tmp_path / "o.wav"), "--chunk-seconds", str(value)], capsys)  # fmt: skip
    assert code == 2 and err.strip().count("\n") == 0, err
    assert err.startswith(f"error: --chunk-seconds {value:g}: expected at least 1 s") and "context" in err, err
    assert not (tmp_path / "o.wav").exists()
    assert enhance_signal(shipped, y, chunk_s=1.0).shape == y.shape  # the minimum is taken


def test_a_chunk_or_margin_as_long_as_a_float_goes_is_one_block(shipped, tmp_path):
    """chunk_s=1.8e308 (the largest float) overflowed int() in an OverflowError traceback; any chunk longer than
    the recording is one block, and any margin longer than it is the whole recording."""
    y = (0.05 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)
    sf.write(tmp_path / "x.wav", y, 16000)
    np.testing.assert_array_equal(enhance_signal(shipped, y, chunk_s=1.7976931348623157e308),
                                  enhance_signal(shipped, y, chunk_s=60.0))  # fmt: skip
    enhance_file(shipped, tmp_path / "x.wav", tmp_path / "o.wav", chunk_s=1.7976931348623157e308)
    assert limits.chunk_seconds(1e308) == limits.MAX_CHUNK_S and sf.info(tmp_path / "o.wav").frames == 48000
    # the margin alike: 1e308 s overflowed, 1e12 s was refused as a model needing 2e7 TB ("retrain it")
    for margin_s in (1e12, 1.7976931348623157e308):
        np.testing.assert_array_equal(enhance_signal(shipped, y, margin_s=margin_s), enhance_signal(shipped, y))
        enhance_file(shipped, tmp_path / "x.wav", tmp_path / "o.wav", margin_s=margin_s, overwrite=True)


def test_the_guards_temporary_file_lies_beside_the_output_and_is_counted(shipped, tmp_path, monkeypatch):
    """The guard keeps every frame's T-F energies (8 bytes × units × frames per signal enhanced) in a temporary
    file; it went to the system's temporary folder, uncounted by the free-space check (for an STFT model of 161
    bins it is larger than the block store that was counted)."""
    sr, n = 16000, 4 * 16000
    sf.write(tmp_path / "x.wav", (0.05 * np.random.default_rng(1).standard_normal(n)).astype(np.float32), sr,
             subtype="FLOAT")  # fmt: skip
    out = tmp_path / "sub" / "out.wav"
    need = 4 * n + 4 * n + 8 * shipped.n_units * (1 + n // 160)  # output, block store, guard's energies
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage._replace(free=need - 1000))
    with pytest.raises(SpeechkernError, match=r"out.wav: needs about 717 kB but .* has 716 kB free"):
        enhance_file(shipped, tmp_path / "x.wav", out, chunk_s=1)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage._replace(free=need))
    folders = []
    opened = tempfile.TemporaryFile

    def recorded(*args, **kwargs):
        caller = sys._getframe(1).f_globals["__name__"]
        if caller.startswith("speechkern"):  # not librosa's and numba's own
            folders.append(str(kwargs.get("dir")))
        return opened(*args, **kwargs)

    monkeypatch.setattr(postfilter.tempfile, "TemporaryFile", recorded)
    enhance_file(shipped, tmp_path / "x.wav", out, chunk_s=1)
    # the free-space check's probe in the nearest existing folder, then the block store and the guard's file
    assert out.exists() and folders == [str(tmp_path), str(out.parent), str(out.parent)], folders


def test_enhance_signal_needs_no_temporary_folder(shipped, tmp_path, monkeypatch):
    """enhance_signal, whose recording is in memory, kept the guard's energies in a file of the system's temporary
    folder: with none writable (a read-only container) the in-memory call failed with an OSError traceback."""
    y = (0.05 * np.random.default_rng(2).standard_normal(3 * 16000)).astype(np.float32)
    want = enhance_signal(shipped, y, chunk_s=1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "absent"))  # where every temporary file now fails
    with pytest.raises(OSError), tempfile.TemporaryFile():
        pass
    np.testing.assert_array_equal(enhance_signal(shipped, y, chunk_s=1), want)
    with postfilter.GuardEstimate(dir="memory") as memory, postfilter.GuardEstimate(dir=tmp_path) as on_disk:
        rng = np.random.default_rng(3)
        for _ in range(3):
            mask, energies = rng.uniform(size=(50, 8)), rng.uniform(size=(50, 8))
            memory.add(mask, energies)
            on_disk.add(mask, energies)
        assert memory.snr_estimates() == on_disk.snr_estimates() and memory.frames == 150


def test_the_benchmark_writes_an_infinite_limit_as_none_and_refuses_odd_ones(dev_data, tmp_path, monkeypatch):
    """--atten-lim-db inf (no limit) was written to the JSON as Infinity, which is no JSON (jq, JavaScript refuse
    it); odd values stop in one line before any work."""
    import json
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import shipped_model

    out = tmp_path / "scores.json"
    for value in ("-3", "nan", "-inf"):
        with pytest.raises(SystemExit, match=rf"^--atten-lim-db {value}: expected dB ≥ 0, such as 20$"):
            shipped_model.main([f"--atten-lim-db={value}", "--json", str(out)])
    assert not out.exists()
    argv = ["--split", "val", "--utterances", "1", "--snrs", "0", "--max-seconds", "3", "--speed-minutes", "0"]
    assert shipped_model.main([*argv, "--atten-lim-db", "inf", "--json", str(out)]) in (0, None)

    def no_constants(name):
        raise ValueError(f"{name} is no JSON")

    assert json.loads(out.read_text(), parse_constant=no_constants)["atten_lim_db"] is None


def test_an_interrupt_in_the_blending_pass_keeps_the_old_output_and_leaves_no_file(shipped, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, which the command line turns into it) while the second pass blends and writes: the
    previous output is kept, and neither the output's temporary file nor the block store or the guard's file is
    left in the folder."""
    from speechkern import audio

    n = 5 * 16000
    sf.write(tmp_path / "x.wav", (0.05 * np.random.default_rng(2).standard_normal((n, 2))).astype(np.float32), 16000)
    out = tmp_path / "out.wav"
    sf.write(out, np.zeros(10, np.float32), 16000)
    reads, real = [], audio.read_block

    def interrupted(handle, start, stop):
        reads.append((start, stop))
        if len(reads) == 5 + 5 + 2:  # the level pass and the block pass read 5 blocks each; then the blend's
            raise KeyboardInterrupt
        return real(handle, start, stop)

    monkeypatch.setattr(audio, "read_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        enhance_file(shipped, tmp_path / "x.wav", out, chunk_s=1, overwrite=True, per_channel=True)
    assert reads[-1] == (16000, 32000)  # in the second pass
    assert sf.info(out).frames == 10 and sorted(p.name for p in tmp_path.iterdir()) == ["out.wav", "x.wav"]
    reads.clear()  # into folders enhance creates: they are removed again
    with pytest.raises(KeyboardInterrupt):
        enhance_file(shipped, tmp_path / "x.wav", tmp_path / "new" / "deeper" / "out.wav", chunk_s=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav", "x.wav"]


def test_the_free_space_check_counts_the_scratch_files_of_the_signals_enhanced(shipped, tmp_path, monkeypatch):
    """Channels averaged are enhanced once: one block store and one guard file, not one per channel (a stereo file
    was refused on a disk with room for it); channels that cancel are enhanced each on its own, and counted so."""
    n = 4 * 16000
    x = (0.05 * np.random.default_rng(3).standard_normal(n)).astype(np.float32)
    y = (0.05 * np.random.default_rng(4).standard_normal(n)).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", np.stack([x, y], 1), 16000, subtype="FLOAT")
    sf.write(tmp_path / "cancel.wav", np.stack([x, -x], 1), 16000, subtype="FLOAT")
    scratch = 4 * n + 8 * shipped.n_units * (1 + n // 160)  # block store, guard's energies: one signal's
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage._replace(free=2 * 4 * n + scratch))
    enhance_file(shipped, tmp_path / "stereo.wav", tmp_path / "stereo_out.wav", chunk_s=1)
    assert sf.info(tmp_path / "stereo_out.wav").frames == n
    with pytest.raises(SpeechkernError, match=r"cancel_out.wav: needs about 1.4 MB but .* has 973 kB free"):
        enhance_file(shipped, tmp_path / "cancel.wav", tmp_path / "cancel_out.wav", chunk_s=1)
    assert not (tmp_path / "cancel_out.wav").exists()


def test_the_progress_bar_covers_the_blending_pass(shipped, tmp_path, caplog):
    """The bar reached its end after the first pass and stood there while the second blended and wrote."""
    import logging

    sf.write(tmp_path / "x.wav", (0.05 * np.random.default_rng(6).standard_normal(5 * 16000)).astype(np.float32),
             16000)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="speechkern"):
        enhance_file(shipped, tmp_path / "x.wav", tmp_path / "o.wav", chunk_s=1)
    steps = [(r.progress.completed, r.progress.total, r.progress.description) for r in caplog.records
             if getattr(r, "progress", None) is not None and r.progress.task == "enhance/blocks"]  # fmt: skip
    assert [c for c, _, _ in steps] == [16000 * k for k in range(1, 11)] and {t for _, t, _ in steps} == {160000}
    assert steps[4][2] == "enhancing x.wav" and steps[5][2] == "blending x.wav"


def test_the_guard_table_prints_the_clean_rows_si_sdr_as_infinite_and_na(tmp_path, monkeypatch, capsys):
    """On the clean rows the reference is the input, so the blended output's SI-SDR at w = 1 is ~200 dB (the
    1e-20 floor) and its interpolation in w printed a large meaningless number, the input's printed nan."""
    import json
    import re
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import clean_guard

    rows = []
    for snr in (-5.0, 0.0, 5.0, 10.0, 20.0):
        gain = 20.0 - snr if snr < 20 else 0.6 * np.arange(6) - 3.0  # the model helps, but at 20 dB costs 3 dB
        for k in (-1.0, 0.0, 1.0):
            rows.append({"snr": snr, "snr_mask": snr + k, "snr_floor": snr - k, "stoi_in": 0.7 + snr / 100,
                         "si_sdr_in": snr, "stoi": [0.8 + snr / 100] * 6,
                         "si_sdr": list(snr + np.linspace(gain, 0, 6) if snr < 20 else snr + gain)})  # fmt: skip
    for k in range(3):  # clean: estimated above 20 dB, so the guard passes it
        rows.append({"snr": "inf", "snr_mask": 20.0, "snr_floor": 40.0 + k, "stoi_in": 1.0, "si_sdr_in": None,
                     "stoi": [0.98, 0.985, 0.99, 0.995, 0.998, 1.0],
                     "si_sdr": [19.0, 21.0, 23.0, 26.0, 31.0, 200.0]})  # fmt: skip
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"rows": rows}))
    assert clean_guard.main(["--from-json", str(scores)]) == 0
    out = capsys.readouterr().out
    clean = [line for line in out.splitlines() if line.startswith("| clean |") and "(" in line]
    assert len(clean) == 1 and "/ ∞ |" in clean[0] and "/ n/a (" in clean[0], out
    assert all(abs(float(v)) < 100 for v in re.findall(r"-?\d+\.\d+", clean[0])), clean[0]
    assert "the input's SI-SDR is infinite" in out and "nan" not in out


def test_an_output_clipped_by_its_encoding_is_said(shipped, tmp_path):
    """A recording clipped at full scale came out with peaks of +1.3 dBFS, cut off by its 16-bit encoding without a
    word; a float WAV keeps them, so nothing is said there."""
    from speechkern.synth import TALKERS, synthesize

    clean = synthesize(TALKERS[0], 2.0, seed=0)
    y = clean + 0.05 * np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    y = np.clip(3 * y / np.abs(y).max(), -1, 1).astype(np.float32)
    sf.write(tmp_path / "loud.wav", y, 16000, subtype="PCM_16")
    sf.write(tmp_path / "loud_float.wav", y, 16000, subtype="FLOAT")
    result = enhance_file(shipped, tmp_path / "loud.wav", tmp_path / "o.wav")
    said = [n for n in result.notes if "exceed full scale" in n]
    assert len(said) == 1 and "were clipped in its PCM_16 encoding" in said[0] and "o.wav: " in said[0], result.notes
    assert np.abs(sf.read(tmp_path / "o.wav")[0]).max() <= 1.0
    result = enhance_file(shipped, tmp_path / "loud_float.wav", tmp_path / "of.wav")
    assert not [n for n in result.notes if "exceed full scale" in n]
    assert np.abs(sf.read(tmp_path / "of.wav")[0]).max() > 1
