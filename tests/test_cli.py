"""The command line as a user meets it: one-line errors with a non-zero exit, mix, oracle, enhance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli as run

from speechkern import audio
from speechkern.errors import SpeechkernError


def _tone_files(tmp_path, seconds=2.0):
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    speech = (0.1 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    noise = (0.05 * rng.standard_normal(16000 * 5)).astype(np.float32)
    audio.save(tmp_path / "clean.wav", speech, 16000)
    audio.save(tmp_path / "noise.wav", noise, 16000)
    return tmp_path / "clean.wav", tmp_path / "noise.wav"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["enhance", "missing.wav", "--model", "x"], "missing.wav: no such file or folder"),
        (["mix", "missing.wav", "n.wav", "--snr", "0", "-o", "o.wav"], "missing.wav: no such file"),
        (["train", "recipes/demo", "--set", "data.bogus=1"], "unknown recipe key 'data.bogus'"),
        (["train", "no/such/recipe"], "no recipe found"),
        (["evaluate", "no/such/run"], "no such"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").symlink_to(__import__("pathlib").Path(__file__).resolve().parents[1] / "recipes")
    code, _, err = run(argv, capsys)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["enhance", "x.wav", "--chunk-seconds", "abc"],
         "error: Invalid value for '--chunk-seconds': Input should be a valid number, unable to parse string as a "
         "number (see `speechkern enhance --help`)"),
        (["enhance"], "error: Missing argument 'inputs' (see `speechkern enhance --help`)"),
        (["enhance", "--bogus", "x.wav"], "error: No such option: --bogus (see `speechkern enhance --help`)"),
        (["frobnicate"], "error: No such command 'frobnicate' (see `speechkern --help`)"),
        (["losses", "frob"], "error: No such command 'frob' (see `speechkern losses --help`)"),
        (["train", "--workers", "-1", "recipes/demo"],
         "error: Invalid value for '--workers': Input should be greater than or equal to 0 (see `speechkern train "
         "--help`)"),
    ],
)  # fmt: skip
def test_a_usage_error_is_one_line_too(argv, expected, capsys):
    """Click's usage errors took four lines (usage, "Try ...", a blank line, the error) where every other refusal
    of the command line is one line."""
    code, out, err = run(argv, capsys)
    assert (code, err.strip(), out) == (2, expected, ""), err


def test_not_audio_and_empty_files(capsys, tmp_path):
    (tmp_path / "text.wav").write_text("hello")
    audio.save(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    clean, _ = _tone_files(tmp_path)
    for bad, message in (("text.wav", "not a readable audio file"), ("empty.wav", "holds no samples")):
        code, _, err = run(["mix", str(clean), str(tmp_path / bad), "--snr", "0", "-o", str(tmp_path / "o.wav")],
                           capsys)  # fmt: skip
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_mix_writes_a_mixture_at_the_snr(capsys, tmp_path):
    clean, noise = _tone_files(tmp_path)
    code, _, err = run(["mix", str(clean), str(noise), "--snr", "5", "-o", str(tmp_path / "noisy.wav")], capsys)
    assert code == 0, err
    mix, sr = audio.load(tmp_path / "noisy.wav", sr=None)
    speech, _ = audio.load(clean, sr=None)
    assert sr == 16000 and len(mix) == len(speech)
    residual = mix - speech
    snr = 10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum(residual.astype(np.float64) ** 2))
    assert snr == pytest.approx(5.0, abs=0.1)  # 16-bit output rounds a little
    code, _, err = run(["mix", str(clean), str(noise), "--snr", "5", "-o", str(tmp_path / "noisy.wav")], capsys)
    assert code == 2 and "--overwrite" in err


def test_mix_never_replaces_its_own_input_even_with_overwrite(capsys, tmp_path):
    """`speechkern mix c.wav n.wav --snr 0 -o c.wav --overwrite` replaced the clean speech with the mixture (so did
    -o n.wav, and -o a link to c.wav): --overwrite is for an earlier output, and enhance refuses the same."""
    clean, noise = _tone_files(tmp_path)
    (tmp_path / "link.wav").symlink_to(clean)
    before = {p: p.read_bytes() for p in (clean, noise)}
    for out, which, source in ((clean, "speech", clean), (noise, "noise", noise), (tmp_path / "link.wav", "speech",
                                                                                    clean)):  # fmt: skip
        code, _, err = run(["mix", str(clean), str(noise), "--snr", "0", "-o", str(out), "--overwrite"], capsys)
        assert code == 2 and err == (f"error: -o {out}: is the {which} input {source}, which the mixture would "
                                     "replace; choose another output name\n"), err  # fmt: skip
    assert {p: p.read_bytes() for p in (clean, noise)} == before and (tmp_path / "link.wav").is_symlink()


@pytest.mark.parametrize(
    ("clean_subtype", "noise_subtype", "suffix", "written"),
    [("FLOAT", "PCM_16", ".wav", "FLOAT"), ("PCM_16", "PCM_24", ".wav", "PCM_24"),
     ("FLOAT", "FLOAT", ".flac", "PCM_24"), ("PCM_16", "PCM_16", ".wav", "PCM_16")],
)  # fmt: skip
def test_mix_keeps_the_inputs_precision(capsys, tmp_path, clean_subtype, noise_subtype, suffix, written):
    """The mixture was always 16-bit: a quiet float recording (a 1e-9 full-scale peak) mixed at 0 dB came out as a
    file of zeros, and 24-bit inputs lost 8 bits, without a word."""
    clean, noise = _tone_files(tmp_path)
    quiet = 1e-9 if written == "FLOAT" else 1.0
    speech, _ = audio.load(clean, sr=None)
    audio.save(tmp_path / "c.wav", speech * quiet, 16000, overwrite=True, subtype=clean_subtype)
    audio.save(tmp_path / "n.wav", audio.load(noise, sr=None)[0], 16000, subtype=noise_subtype)
    out = tmp_path / f"mix{suffix}"
    code, _, err = run(["mix", str(tmp_path / "c.wav"), str(tmp_path / "n.wav"), "--snr", "0", "-o", str(out)], capsys)
    assert code == 0, err
    assert audio.info(out).subtype == written
    mixture, _ = audio.load(out, sr=None)
    if written == "FLOAT":
        assert np.abs(mixture).max() == pytest.approx(np.abs(speech).max() * quiet * 2.1, rel=0.6)


def test_mix_refuses_a_mixture_that_rounds_to_silence(capsys, tmp_path):
    """Float speech at 1e-40 of full scale mixed into a FLAC (24-bit at most) wrote a file of zeros as 'SNR 0 dB'."""
    clean, noise = _tone_files(tmp_path)
    audio.save(tmp_path / "c.wav", audio.load(clean, sr=None)[0] * 1e-40, 16000, subtype="FLOAT")
    out = tmp_path / "mix.flac"
    code, _, err = run(["mix", str(tmp_path / "c.wav"), str(noise), "--snr", "0", "-o", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "rounds to silence in .flac files (PCM_24)" in err and not out.exists()


def test_mix_says_when_it_rescaled_downmixed_or_resampled(capsys, tmp_path):
    clean, noise = _tone_files(tmp_path)
    code, _, err = run(["mix", str(clean), str(noise), "--snr", "5", "-o", str(tmp_path / "plain.wav")], capsys)
    assert code == 0 and "note:" not in err  # nothing changed: nothing said
    loud_stereo = 0.5 * np.random.default_rng(1).standard_normal((2, 44100 * 2)).astype(np.float32)
    audio.save(tmp_path / "stereo44k.wav", loud_stereo, 44100, subtype="FLOAT")
    out = tmp_path / "loud.wav"
    code, _, err = run(["mix", str(clean), str(tmp_path / "stereo44k.wav"), "--snr", "-20", "-o", str(out)], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert notes[:2] == [
        f"note: {tmp_path / 'stereo44k.wav'}: its 2 channels were averaged to one (the mixture is mono)",
        f"note: {tmp_path / 'stereo44k.wav'}: resampled from 44100 Hz to the speech's 16000 Hz",
    ]
    assert len(notes) == 3 and notes[2].startswith("note: the mixture peaked at ")
    peak = float(notes[2].split("peaked at ")[1].split()[0])
    scale = float(notes[2].split("scaled by ")[1].split()[0])
    assert peak > 1.0 and scale == pytest.approx(0.99 / peak, rel=1e-2)
    assert "to avoid clipping; the SNR is unchanged" in notes[2]
    mixture, _ = audio.load(out, sr=None)
    assert np.abs(mixture).max() == pytest.approx(0.99, abs=1e-3)  # scaled to just under full scale, not clipped


def test_oracle_json_reports_noisy_and_ideal(capsys, tmp_path):
    clean, noise = _tone_files(tmp_path)
    code, out, err = run(["oracle", str(clean), str(noise), "--snr", "0", "--json"], capsys)
    assert code == 0, err
    scores = json.loads(out)
    assert set(scores) == {"noisy", "ideal"}
    for name in scores:
        assert {"stoi", "pesq", "si_sdr"} <= set(scores[name])
    assert scores["ideal"]["si_sdr"] > scores["noisy"]["si_sdr"]
    code, _, err = run(["oracle", str(clean), str(noise), "--snr", "0", "--target", "xyz"], capsys)
    assert code == 2 and "xyz" in err


def test_oracle_refuses_speech_too_short_to_score_and_gives_the_reason_of_every_nan(capsys, tmp_path):
    from speechkern.metrics import stoi_min_samples

    _, noise = _tone_files(tmp_path)
    rng = np.random.default_rng(2)
    minimum = stoi_min_samples(16000)
    assert minimum == 6554  # 0.41 s: more than 32 hops of 128 samples at pystoi's 10 kHz
    for n in (80, minimum - 1, minimum):
        audio.save(tmp_path / f"{n}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000, subtype="FLOAT")
    for n, ms in ((80, "5.0"), (minimum - 1, "409.6")):
        code, out, err = run(["oracle", str(tmp_path / f"{n}.wav"), str(noise), "--snr", "0"], capsys)
        expected = (f"error: {tmp_path / f'{n}.wav'}: {n} samples ({ms} ms) is too short to score; STOI needs at "
                    f"least {minimum} samples (410 ms) at 16000 Hz; give a longer recording\n")  # fmt: skip
        assert (code, out, err) == (2, "", expected)
    code, out, err = run(["oracle", str(tmp_path / f"{minimum}.wav"), str(noise), "--snr", "0", "--json"], capsys)
    assert code == 0, err
    assert all(v is not None for scores in json.loads(out).values() for v in scores.values())  # the shortest scores
    burst = np.zeros(16000, np.float32)
    burst[:400] = 0.1 * rng.standard_normal(400)  # 25 ms of sound: STOI's silence removal leaves too few frames
    audio.save(tmp_path / "burst.wav", burst, 16000, subtype="FLOAT")
    code, out, err = run(["oracle", str(tmp_path / "burst.wav"), str(noise), "--snr", "0"], capsys)
    assert code == 0 and out.count("nan") >= 4, out  # STOI and ESTOI at least, for both systems
    notes = [line.split(": ", 2)[1:] for line in err.splitlines() if line.startswith("note: ")]
    for row in out.splitlines()[1:]:  # every nan of a row has its reason
        system = row.split()[0]
        reasons = [why for name, why in notes if name == system]
        assert len(reasons) == row.count("nan"), (row, reasons)
        assert sum("remain after silence removal" in r for r in reasons) == 2


def test_enhance_without_any_model_says_how_to_train(capsys, tmp_path, monkeypatch):
    """No runs/ and an installation without the shipped model: the error says how to get one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("speechkern.models.select.SHIPPED", tmp_path / "no-shipped-model")
    clean, _ = _tone_files(tmp_path)
    code, _, err = run(["enhance", str(clean)], capsys)
    assert code == 2 and "speechkern train recipes/demo" in err


def test_a_folder_that_is_not_a_run_is_explained(capsys, tmp_path, monkeypatch):
    """evaluate (and enhance --model) on a folder of audio say what a run directory holds and how to make one,
    never to train into that folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "audio").mkdir()
    _tone_files(tmp_path / "audio")
    run_is = ("a run directory is what `speechkern train RECIPE` writes: recipe.toml, manifests/ and models/, in "
              "runs/<recipe name> (or the --out folder); ")  # fmt: skip
    code, _, err = run(["evaluate", "audio"], capsys)
    assert code == 2 and err == f"error: audio: not a run directory (no recipe.toml inside); {run_is}make one with " \
                                "`speechkern train recipes/demo`\n"  # fmt: skip
    code, _, err = run(["enhance", "audio/clean.wav", "--model", "audio"], capsys)
    assert code == 2 and "audio: not a run directory or model folder (no models/ or config.json inside)" in err
    assert run_is in err and "--out audio" not in err
    (tmp_path / "runs/demo/models/kernel").mkdir(parents=True)  # a run here: the error points to it
    (tmp_path / "runs/demo/models/kernel/config.json").write_text("{}")
    code, _, err = run(["evaluate", "no/such/run"], capsys)
    assert code == 2 and f"no/such/run: no such run directory; {run_is}the newest one here is runs/demo; or" in err


def test_an_unknown_or_absent_device_is_named_not_blamed_on_the_model(capsys, tmp_path, monkeypatch):
    import torch

    from speechkern.device import resolve_device
    from speechkern.models.io import MaskModel
    from speechkern.models.select import SHIPPED

    monkeypatch.chdir(tmp_path)
    clean, _ = _tone_files(tmp_path)
    here = "cpu" + "".join(f", cuda:{i}" for i in range(torch.cuda.device_count()))
    for device in ("gpu", "mps", "meta", "cuda:x"):
        code, _, err = run(["enhance", str(clean), "--device", device, "--model", str(SHIPPED)], capsys)
        assert code == 2 and err == f"error: device {device!r}: unknown; expected auto, cpu, cuda or cuda:N " \
                                    f"(devices here: {here})\n"  # fmt: skip
        with pytest.raises(SpeechkernError, match="unknown; expected auto, cpu, cuda or cuda:N"):
            MaskModel.load(SHIPPED, device=device)  # before the folder is read: no "cannot be rebuilt"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SpeechkernError, match=r"device 'cuda': not available, no CUDA GPU is visible here "
                                              r"\(devices here: cpu\); choose one of them, or auto"):  # fmt: skip
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SpeechkernError, match=r"device 'cuda:3': not available, this machine has 2 CUDA GPU\(s\) "
                                              r"\(devices here: cpu, cuda:0, cuda:1\)"):  # fmt: skip
        resolve_device("cuda:3")
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cpu") == torch.device("cpu")


def test_every_command_has_help(capsys):
    for command in ("train", "evaluate", "enhance", "mix", "oracle", "losses", "collapse"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0 and "Usage" in out


def test_condition_selects_or_is_refused_on_a_multi_condition_run(tiny_run, capsys, tmp_path):
    """--condition on a multi-condition run (one model for every condition) was ignored whatever it named."""
    _, root, _ = tiny_run
    clean, _ = _tone_files(tmp_path, seconds=1.0)
    argv = ["enhance", str(clean), "--model", str(root / "run"), "-o", str(tmp_path / "out.wav"), "-q"]
    code, _, err = run([*argv, "--condition", "factory1_-5dB"], capsys)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "out.wav").exists(), err
    assert "--condition factory1_-5dB: " in err and "give one of babble_0dB, ssn_0dB or drop --condition" in err
    code, _, err = run([*argv, "--condition", "ssn_0dB"], capsys)
    assert code == 0 and (tmp_path / "out.wav").is_file(), err
    # The model's own condition name (every mixture) selects it too
    (tmp_path / "out.wav").unlink()
    code, _, err = run([*argv, "--condition", "all"], capsys)
    assert code == 0 and (tmp_path / "out.wav").is_file(), err


@pytest.mark.parametrize(
    "argv",
    [["enhance", "LONG.wav"], ["enhance", "IN", "--model", "LONG"], ["enhance", "IN", "-o", "LONG.wav"],
     ["evaluate", "LONG"], ["train", "LONG"], ["mix", "IN", "IN", "--snr", "0", "-o", "LONG.wav"],
     ["oracle", "LONG.wav", "IN", "--snr", "0"], ["losses", "bench", "--data", "LONG"],
     ["collapse", "run", "--out", "LONG"]],
)  # fmt: skip
def test_a_path_too_long_for_the_file_system_is_one_line(argv, capsys, tmp_path, monkeypatch):
    """A name longer than the file system allows ended every command in an OSError traceback ('File name too
    long') from the first os.stat of it: Path.exists raises for it."""
    monkeypatch.chdir(tmp_path)
    clean, _ = _tone_files(tmp_path)
    long = "a" * 5000
    code, _, err = run([arg.replace("LONG", long).replace("IN", str(clean)) for arg in argv], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-500:]
    assert err.startswith(f"error: {'a' * 80}…") and "characters): the name is too long for the file system" in err
