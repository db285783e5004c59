"""`speechkern enhance` never loses or mis-writes a file: where outputs go, in which format, what is refused up
front, what a batch does with a file it cannot write, and block-wise processing equal to whole-file processing."""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli as run

from speechkern import audio
from speechkern.enhance import (
    blocks,
    describe_speed,
    enhance_file,
    find_inputs,
    output_name,
    plan_outputs,
)
from speechkern.errors import SpeechkernError
from speechkern.features import reach_s


def noise(seconds: float = 0.5, sr: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(n_samples,) or (n_samples, channels) of quiet white noise, soundfile's layout."""
    shape = (int(seconds * sr),) if channels == 1 else (int(seconds * sr), channels)
    return (np.random.default_rng(seed).standard_normal(shape) * 0.05).astype(np.float32)


def write(path: Path, y: np.ndarray, sr: int = 16000, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, sr, **kwargs)
    return path


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    return tiny_run[1] / "run"


@pytest.fixture(scope="module")
def model(run_dir):
    from speechkern.models.io import MaskModel

    return MaskModel.load(run_dir / "models" / "kernel")


# -- where outputs go (no model needed) --------------------------------------------------------------------------


def test_folder_search_finds_every_readable_format_and_counts_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    y = noise(0.1)
    for name in ("in/a/x.wav", "in/b/x.wav", "in/x.ogg", "in/x.mp3", "in/s.sph", "in/c.aiff", "in/F.FLAC"):
        fmt = {".sph": "NIST", ".aiff": "AIFF"}.get(Path(name).suffix)
        write(tmp_path / name, y, format=fmt)
    write(tmp_path / "in/x_enhanced.wav", y)  # an earlier output: not enhanced again
    (tmp_path / "in/notes.txt").write_text("x")
    (tmp_path / "in/a/README").write_text("x")
    found = find_inputs(["in"])
    assert sorted(p.as_posix() for p in found.files) == [
        "in/F.FLAC", "in/a/x.wav", "in/b/x.wav", "in/c.aiff", "in/s.sph", "in/x.mp3", "in/x.ogg",
    ]  # fmt: skip
    assert sorted(p.name for p in found.skipped) == ["README", "notes.txt", "x_enhanced.wav"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/notes.txt").write_text("x")
    with pytest.raises(SpeechkernError, match=r"no audio files found in docs \(1 file\(s\) of other types"):
        find_inputs(["docs"])


def test_outputs_mirror_the_input_tree_and_keep_the_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    y = noise(0.1)
    for name in ("in/a/x.wav", "in/b/x.wav", "in/x.ogg", "in/x.mp3"):
        write(tmp_path / name, y)
    plan = {i.as_posix(): o.as_posix() for i, o in plan_outputs(find_inputs(["in"]), "out")}
    assert plan == {
        "in/a/x.wav": "out/a/x_enhanced.wav", "in/b/x.wav": "out/b/x_enhanced.wav",
        "in/x.mp3": "out/x_enhanced.mp3", "in/x.ogg": "out/x_enhanced.ogg",
    }  # fmt: skip
    # files from two folders: the tree below their common folder is kept
    plan = {i.as_posix(): o.as_posix() for i, o in plan_outputs(find_inputs(["in/a/x.wav", "in/b"]), "out")}
    assert plan == {"in/a/x.wav": "out/a/x_enhanced.wav", "in/b/x.wav": "out/b/x_enhanced.wav"}
    # no -o: beside each input
    assert [o.as_posix() for _, o in plan_outputs(find_inputs(["in/a"]), None)] == ["in/a/x_enhanced.wav"]
    assert output_name(Path("x.m4a")) == "x.m4a_enhanced.wav"  # a suffix soundfile cannot write stays in the name


def test_two_inputs_for_one_output_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "x.wav", noise(0.1))
    (tmp_path / "x").write_bytes((tmp_path / "x.wav").read_bytes())  # a WAV without a suffix
    with pytest.raises(SpeechkernError, match=r"x.wav and x would both be written to x_enhanced.wav"):
        plan_outputs(find_inputs(["x.wav", "x"]), None)
    write(tmp_path / "x_enhanced.wav", noise(0.1))
    with pytest.raises(SpeechkernError, match=r"x_enhanced.wav: is an input, and enhancing x.wav would replace it"):
        plan_outputs(find_inputs(["x.wav", "x_enhanced.wav"]), None)
    # through the command line: refused before the model is even looked for, nothing written
    code, _, err = run(["enhance", "x.wav", "x", "--model", "no/such/run"], capsys)
    assert code == 2 and "would both be written" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "x.wav", "x_enhanced.wav"]


def test_an_output_with_an_audio_suffix_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.wav", noise(0.1))
    write(tmp_path / "b.wav", noise(0.1))
    one = find_inputs(["a.wav"])
    assert plan_outputs(one, "out/base.mp3") == [(Path("a.wav"), Path("out/base.mp3"))]
    assert plan_outputs(one, "out/base.FLAC") == [(Path("a.wav"), Path("out/base.FLAC"))]
    with pytest.raises(SpeechkernError, match=r"out/base.m4a: cannot write .m4a files; name the output .wav"):
        plan_outputs(one, "out/base.m4a")
    with pytest.raises(SpeechkernError, match=r"output out/all.wav: names one file but 2 inputs were given"):
        plan_outputs(find_inputs(["a.wav", "b.wav"]), "out/all.wav")
    (tmp_path / "v1.0.wav").mkdir()  # an existing folder stays a folder, whatever its name
    assert plan_outputs(one, "v1.0.wav") == [(Path("a.wav"), Path("v1.0.wav/a_enhanced.wav"))]
    assert plan_outputs(one, "takes.v2") == [(Path("a.wav"), Path("takes.v2/a_enhanced.wav"))]
    assert not (tmp_path / "out").exists()


def test_a_trailing_slash_makes_the_output_a_folder(tmp_path, monkeypatch, capsys):
    """`enhance a.wav -o out.wav/` wrote a file named out.wav (Path() drops the slash); `mix ... -o m.wav/` too."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.wav", noise(0.1))
    write(tmp_path / "b.wav", noise(0.1))
    assert plan_outputs(find_inputs(["a.wav"]), "out.wav/") == [(Path("a.wav"), Path("out.wav/a_enhanced.wav"))]
    assert plan_outputs(find_inputs(["a.wav", "b.wav"]), b"all.wav/") == [
        (Path("a.wav"), Path("all.wav/a_enhanced.wav")), (Path("b.wav"), Path("all.wav/b_enhanced.wav"))]  # fmt: skip
    code, out, err = run(["mix", "a.wav", "b.wav", "--snr", "0", "-o", "m.wav/"], capsys)
    assert code == 2 and err.strip() == ("error: -o m.wav/: ends with a slash, so it names a folder, but mix writes "
                                         "one file; give the file's name, such as noisy.wav"), err  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]
    shipped = Path(__file__).resolve().parents[1] / "speechkern" / "pretrained" / "general"
    code, out, err = run(["enhance", "a.wav", "--model", str(shipped), "-o", "out.wav/", "-q"], capsys)
    assert code == 0 and (tmp_path / "out.wav" / "a_enhanced.wav").is_file(), err


def test_speed_is_described_as_it_was():
    assert describe_speed(9.0, 10.0) == "0.9× real time (slower than real time)"
    assert describe_speed(60.0, 4.0) == "15.0× faster than real time"


def test_blocks_cover_the_signal_once_with_margins():
    spans = list(blocks(1000, 300, 50))
    assert [(s, e) for s, e, _, _ in spans] == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    assert [(lo, hi) for _, _, lo, hi in spans] == [(0, 350), (250, 650), (550, 950), (850, 1000)]
    assert list(blocks(400, 300, 50)) == [(0, 400, 0, 400)]


# -- mix and oracle: non-finite audio and values ----------------------------------------------------------------


def test_mix_refuses_non_finite_audio_and_snr(tmp_path, capsys):
    clean = write(tmp_path / "clean.wav", noise(1.0, seed=1), subtype="FLOAT")
    good = write(tmp_path / "noise.wav", noise(2.0, seed=2), subtype="FLOAT")
    bad = noise(2.0, seed=2)
    bad[16000 + 8] = np.nan
    write(tmp_path / "nan_noise.wav", bad, subtype="FLOAT")
    inf_speech = noise(1.0, seed=1)
    inf_speech[5] = np.inf
    write(tmp_path / "inf_clean.wav", inf_speech, subtype="FLOAT")
    out = tmp_path / "mix.wav"
    for argv, expected in (
        ([clean, tmp_path / "nan_noise.wav", "--snr", "0"], "nan_noise.wav: holds 1 NaN or infinite sample(s), the "
                                                            "first at 1.000 s"),
        ([tmp_path / "inf_clean.wav", good, "--snr", "0"], "inf_clean.wav: holds 1 NaN or infinite sample(s)"),
        ([clean, good, "--snr", "nan"], "--snr nan: expected a finite number of dB"),
        ([clean, good, "--snr", "-inf"], "--snr -inf: expected a finite number of dB"),
        ([clean, good, "--snr", "1e6"], "--snr 1e+06: expected an SNR between -100 and 100 dB"),
        ([clean, good, "--snr=-1e6"], "--snr -1e+06: expected an SNR between -100 and 100 dB"),
    ):  # fmt: skip
        code, _, err = run(["mix", *map(str, argv), "-o", str(out)], capsys)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    code, _, err = run(["oracle", str(clean), str(good), "--snr", "nan"], capsys)
    assert code == 2 and "--snr nan" in err
    code, _, err = run(["oracle", str(clean), str(good), "--snr", "0", "--target", "xyz"], capsys)
    assert code == 2 and "--target 'xyz'" in err and "--kind" not in err
    code, _, err = run(["mix", str(clean), str(good), "--snr", "0", "-o", str(tmp_path / "mix.m4a")], capsys)
    assert code == 2 and "cannot write .m4a files" in err


# -- enhancing files (the tiny trained model) -------------------------------------------------------------------


def test_batch_writes_the_mirrored_tree_in_each_input_format(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    y = noise(0.5)
    for name in ("in/a/x.wav", "in/b/x.wav", "in/x.ogg", "in/x.mp3"):
        write(tmp_path / name, y)
    (tmp_path / "in/notes.txt").write_text("x")
    code, _, err = run(["enhance", "in", "--model", str(run_dir), "-o", "out", "--quiet"], capsys)
    assert code == 0, err
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["a/x_enhanced.wav", "b/x_enhanced.wav", "x_enhanced.mp3", "x_enhanced.ogg"]
    assert sf.info(tmp_path / "out/x_enhanced.ogg").subtype == "VORBIS"
    assert sf.info(tmp_path / "out/x_enhanced.mp3").format == "MP3"
    assert "enhanced 4 of 4 file(s)" in err and "skipped 1 file(s)" in err and "1 .txt" in err


def test_a_second_path_to_one_file_is_said_not_dropped_silently(run_dir, tmp_path, monkeypatch, capsys):
    """`speechkern enhance a.wav b.wav` with b.wav a symbolic link to a.wav wrote a_enhanced.wav only and said
    nothing of b.wav: exit 0, and the b_enhanced.wav the user asked for not there without a word."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.wav", noise(0.5))
    (tmp_path / "b.wav").symlink_to("a.wav")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.wav").symlink_to("../a.wav")
    found = find_inputs(["a.wav", "b.wav", "a.wav", "./a.wav", "sub"])
    assert found.files == [Path("a.wav")] and found.same == [(Path("b.wav"), Path("a.wav")),
                                                               (Path("sub/c.wav"), Path("a.wav"))]  # fmt: skip
    code, _, err = run(["enhance", "a.wav", "b.wav", "--model", str(run_dir), "--quiet"], capsys)
    assert code == 0, err
    assert "note: b.wav: the same file as a.wav (a symbolic link, or another path to it); enhanced once, as it" in err
    assert (tmp_path / "a_enhanced.wav").is_file() and not (tmp_path / "b_enhanced.wav").exists()


def test_a_rerun_keeps_existing_outputs_says_so_once_and_succeeds(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("in/a.wav", "in/b.wav"):
        write(tmp_path / name, noise(0.5))
    (tmp_path / "in/notes.txt").write_text("x")
    argv = ["enhance", "in", "--model", str(run_dir), "--quiet"]
    assert run(argv, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").glob("*_enhanced.wav")}
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "kept 2 existing outputs (in/a_enhanced.wav, in/b_enhanced.wav), nothing left to enhance; pass " \
           "--overwrite to replace them" in err  # fmt: skip
    assert "skipped 1 file(s) in the folders that are not audio speechkern reads: 1 .txt" in err
    assert "earlier output" not in err and "could not be enhanced" not in err and out == ""
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").glob("*_enhanced.wav")} == before
    # a new input beside kept outputs, and an earlier output whose input is gone
    write(tmp_path / "in/c.wav", noise(0.5))
    write(tmp_path / "in/old_enhanced.wav", noise(0.1))
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "kept 2 existing outputs (in/a_enhanced.wav, in/b_enhanced.wav); pass --overwrite" in err
    assert "skipped 1 earlier output(s) *_enhanced in the folders" in err and "enhanced 1 of 1 file(s)" in err
    assert out.strip() == "in/c.wav → in/c_enhanced.wav  (0.5 s, 1 ch, 16000 Hz)"
    code, _, err = run(["enhance", "in/a.wav", "--model", str(run_dir), "--quiet"], capsys)
    assert code == 0 and "kept 1 existing output (in/a_enhanced.wav), nothing left to enhance" in err
    code, _, err = run([*argv, "--overwrite"], capsys)
    assert code == 0 and "enhanced 3 of 3 file(s)" in err and "kept" not in err
    assert "skipped 1 earlier output(s)" in err  # old_enhanced.wav only: the others are replaced
    assert (tmp_path / "in/a_enhanced.wav").read_bytes() == before["a_enhanced.wav"]  # same input, same output
    assert "Exit status: 0 when every input was enhanced or its output was kept" in " ".join(
        run(["enhance", "--help"], capsys)[1].split()
    )


def test_unwritable_output_is_refused_before_compute_and_the_batch_goes_on(run_dir, tmp_path, monkeypatch, capsys):
    from speechkern import features

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "in/a/x.wav", noise(0.5))
    write(tmp_path / "in/b/y.wav", noise(0.5))
    nan = noise(0.5)
    nan[100] = np.nan
    write(tmp_path / "in/c/z.wav", nan, subtype="FLOAT")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/a").write_text("a file where the folder a/ should be")
    calls = []
    extract = features.extract
    monkeypatch.setattr(features, "extract", lambda *a, **k: calls.append(1) or extract(*a, **k))
    code, _, err = run(["enhance", "in", "--model", str(run_dir), "-o", "out", "--quiet"], capsys)
    assert code == 2
    assert "out/a/x_enhanced.wav: cannot be written, out/a is a file, not a folder" in err
    assert "in/c/z.wav: holds 1 NaN or infinite sample(s)" in err
    assert "enhanced 1 of 3 file(s)" in err
    assert "2 of 3 files could not be enhanced: in/a/x.wav, in/c/z.wav" in err
    assert (tmp_path / "out/b/y_enhanced.wav").is_file() and not (tmp_path / "out/c").exists()
    assert len(calls) == 1  # features computed for y.wav only: x.wav was refused before any compute
    assert "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_read_only_folder_is_refused_before_compute(model, tmp_path):
    write(tmp_path / "x.wav", noise(0.5))
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    try:
        with pytest.raises(SpeechkernError, match=r"ro/x.wav: cannot be written in .*ro \(Permission denied\)"):
            enhance_file(model, tmp_path / "x.wav", tmp_path / "ro" / "x.wav")
    finally:
        os.chmod(tmp_path / "ro", 0o755)


def test_full_disk_is_refused_up_front_and_a_failed_write_keeps_the_old_output(model, tmp_path, monkeypatch):
    import shutil

    from speechkern import outputs

    write(tmp_path / "x.wav", noise(1.0))
    out = tmp_path / "out.wav"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    # 32 kB of PCM_16 output and 52 kB of the clean-input guard's T-F energies (8 bytes × 64 units × 101 frames)
    with pytest.raises(SpeechkernError, match=r"out.wav: needs about 84 kB but .* has 1.0 kB free"):
        enhance_file(model, tmp_path / "x.wav", out)
    monkeypatch.undo()

    out.write_bytes(b"previous output")

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sf.SoundFile, "write", disk_full)
    with pytest.raises(SpeechkernError, match=r"out.wav: could not be written \(No space left on device\)"):
        enhance_file(model, tmp_path / "x.wav", out, overwrite=True)
    assert out.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav", "x.wav"]  # no temporary file left


def test_too_short_inputs_are_refused_naming_the_minimum(model, tmp_path):
    write(tmp_path / "short.wav", noise(0.005))  # 80 samples
    write(tmp_path / "short8k.wav", noise(0.0125, sr=8000), sr=8000)  # 100 samples
    with pytest.raises(SpeechkernError, match=r"short.wav: 80 samples \(5.0 ms\) is shorter than one frame; the "
                                              r"model needs at least 320 samples \(20 ms\) at 16000 Hz"):  # fmt: skip
        enhance_file(model, tmp_path / "short.wav", tmp_path / "o.wav")
    with pytest.raises(SpeechkernError, match=r"at least 160 samples \(20 ms\) at 8000 Hz"):
        enhance_file(model, tmp_path / "short8k.wav", tmp_path / "o.wav")
    write(tmp_path / "frame.wav", noise(0.02))  # exactly one frame: enhanced, not silence
    enhance_file(model, tmp_path / "frame.wav", tmp_path / "o.wav")
    y, _ = audio.load(tmp_path / "o.wav", sr=None)
    assert len(y) == 320 and np.abs(y).max() > 0.01
    with pytest.raises(SpeechkernError, match=r"chunk_s=0: expected a finite number of seconds above 0"):
        enhance_file(model, tmp_path / "frame.wav", tmp_path / "o2.wav", chunk_s=0.0)


def test_encoding_and_channels_are_kept_or_the_change_is_said(model, tmp_path):
    stereo = noise(0.5, channels=2)
    for subtype in ("PCM_32", "DOUBLE", "PCM_24"):
        write(tmp_path / f"{subtype}.wav", stereo, subtype=subtype)
        result = enhance_file(model, tmp_path / f"{subtype}.wav", tmp_path / f"{subtype}_out.wav")
        info = sf.info(tmp_path / f"{subtype}_out.wav")
        assert (info.subtype, info.channels) == (subtype, 2)
        assert len(result.notes) == 1 and "2 channels were averaged" in result.notes[0]
        assert "per_channel=True" in result.notes[0]
    result = enhance_file(model, tmp_path / "PCM_32.wav", tmp_path / "to.flac", per_channel=True)
    assert sf.info(tmp_path / "to.flac").subtype == "PCM_24"
    assert result.notes == [f"{tmp_path / 'to.flac'}: written as PCM_24 (the input is PCM_32, which .flac files "
                            "cannot hold); name the output .wav to keep it"]  # fmt: skip


def test_a_file_of_one_block_is_decoded_once(model, tmp_path, monkeypatch):
    write(tmp_path / "short.wav", noise(2.0))
    decoded = []
    read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, *a, **k: decoded.append(len(out := read(self, *a, **k)))
                        or out)  # fmt: skip
    enhance_file(model, tmp_path / "short.wav", tmp_path / "once.wav")
    assert sum(decoded) == 32000  # every sample once
    # A file of several blocks: one pass for the level, one for the blocks with their margins, and one to blend
    # with the clean-input guard's weight, the whole file's (without the guard there is no third).
    decoded.clear()
    write(tmp_path / "long.wav", noise(4.0))
    enhance_file(model, tmp_path / "long.wav", tmp_path / "blocks.wav", chunk_s=1.0, margin_s=0.25)
    margin = math.ceil(max(0.25, reach_s(model.feature_config)) * 100) * 160  # at least the features' reach
    spans = list(blocks(64000, 16000, margin))
    assert len(spans) == 4 and sum(decoded) == 64000 + sum(hi - lo for _, _, lo, hi in spans) + 64000
    decoded.clear()
    enhance_file(model, tmp_path / "long.wav", tmp_path / "plain.wav", chunk_s=1.0, margin_s=0.25, clean_guard=False)
    assert sum(decoded) == 64000 + sum(hi - lo for _, _, lo, hi in spans)


@pytest.mark.parametrize("sr, tolerance", [(16000, 1e-4), (22050, 1e-3)])
def test_blockwise_output_equals_whole_file_output(model, tmp_path, sr, tolerance):
    t = np.arange(int(4 * sr)) / sr
    speechy = 0.1 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + noise(4, sr, seed=3)
    write(tmp_path / "in.wav", speechy, sr, subtype="FLOAT")
    enhance_file(model, tmp_path / "in.wav", tmp_path / "whole.wav", chunk_s=60.0)
    enhance_file(model, tmp_path / "in.wav", tmp_path / "blocks.wav", chunk_s=1.5)  # 3 blocks, 1-s margins
    whole, _ = sf.read(tmp_path / "whole.wav", dtype="float64")
    blockwise, _ = sf.read(tmp_path / "blocks.wav", dtype="float64")
    assert whole.shape == blockwise.shape == speechy.shape
    err = np.sqrt(np.mean((whole - blockwise) ** 2)) / np.sqrt(np.mean(whole**2))
    assert err < tolerance, f"block seams: relative error {err:.2e}"


@pytest.mark.parametrize("sr", [16000, 48000])
def test_the_attenuation_limit_bounds_how_much_noise_is_removed(tmp_path, sr):
    """White noise through the shipped model: unlimited, it comes out more than 10 dB down; with
    atten_lim_db = 6 about 6 dB down (±1 dB for the filterbank's ripple), in the band above the model's
    8 kHz too."""
    from speechkern.models.select import SHIPPED, find_model

    shipped, _ = find_model(SHIPPED)
    y = 0.05 * noise(2.0, sr, seed=4)
    write(tmp_path / "noise.wav", y, sr, subtype="FLOAT")
    level = {}
    for name, limit in (("free.wav", None), ("six.wav", 6.0)):
        enhance_file(shipped, tmp_path / "noise.wav", tmp_path / name, atten_lim_db=limit)
        out = sf.read(tmp_path / name, dtype="float64")[0]
        level[limit] = 10 * np.log10(np.mean(out**2) / np.mean(y.astype(np.float64) ** 2))
    assert level[None] < -10 and -7 <= level[6.0] <= -5, level


def test_an_odd_attenuation_limit_is_refused_in_one_line_before_any_work(tmp_path, capsys):
    write(tmp_path / "x.wav", noise(1.0))
    for value in ("-3", "nan"):
        code, _, err = run(["enhance", str(tmp_path / "x.wav"), "--atten-lim-db", value], capsys)
        assert code == 2 and err.strip().splitlines() == [
            f"error: --atten-lim-db {float(value)!r}: expected the most the mask may attenuate, in dB ≥ 0, such as 20 "
            "(0: no attenuation)"
        ], err
    assert not (tmp_path / "x_enhanced.wav").exists()


def test_a_silent_channel_is_not_filled_with_the_other_at_half_its_level(model, tmp_path):
    """A stereo file with speech on the left and silence on the right came out with their average on both: the left
    channel 6 dB quieter than it went in, the silent one filled with it; only opposite phases were enhanced apart."""
    left = noise(1.0, seed=3)
    for right, name in ((np.zeros_like(left), "silent"), (left * 0.05, "quiet"), (left * 0.5, "half")):
        path = write(tmp_path / f"{name}.wav", np.stack([left, right], axis=1), subtype="FLOAT")
        result = enhance_file(model, path, tmp_path / f"{name}_out.wav")
        y, _ = sf.read(tmp_path / f"{name}_out.wav", dtype="float32")
        rms = np.sqrt((y.astype(np.float64) ** 2).mean(axis=0))
        apart = any("differ in level by 20 dB or more" in n for n in result.notes)
        if name == "half":  # 6 dB apart: averaged, as before
            assert not apart and rms[0] == pytest.approx(rms[1])
        else:
            assert apart and not any("were averaged" in n for n in result.notes), result.notes
            assert rms[1] < rms[0] / 10
            alone = enhance_file(model, write(tmp_path / f"{name}_l.wav", left, subtype="FLOAT"), tmp_path / "l.wav",
                                 overwrite=True)  # fmt: skip
            assert alone and np.allclose(y[:, 0], sf.read(tmp_path / "l.wav", dtype="float32")[0], atol=1e-5)


def test_an_output_that_is_a_link_to_the_input_names_both_once(tmp_path, monkeypatch, capsys):
    """`speechkern enhance link.wav -o c.wav` (link.wav → c.wav) said "link.wav: c.wav: is the input itself": the
    command line put the input's name before a message that named only the output."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "c.wav", noise(0.5))
    (tmp_path / "link.wav").symlink_to("c.wav")
    for given, out, says in [("link.wav", "c.wav", "c.wav: is the input link.wav (another path to it); choose"),
                             ("c.wav", "link.wav", "link.wav: is the input c.wav (another path to it); choose"),
                             ("c.wav", "./c.wav", "c.wav: is the input itself; choose")]:  # fmt: skip
        code, _, err = run(["enhance", given, "-o", out, "--overwrite", "--quiet"], capsys)
        assert code == 2 and err.endswith(f"\nerror: {says} another output name\n"), err
    assert sf.info(tmp_path / "c.wav").frames == 8000
