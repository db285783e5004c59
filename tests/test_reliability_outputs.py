"""Reliability, round 3 (issue 27): no result is lost or silently corrupted. Concurrent writers, inputs that change
while read, stereo that cancels, a DC offset, stale outputs, globs over earlier outputs, debris of killed runs,
symbolic links out of the input tree and file names that are not UTF-8."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli as run

from speechkern import audio
from speechkern import enhance as enhance_module
from speechkern.enhance import enhance_file
from speechkern.errors import SpeechkernError
from speechkern.outputs import atomic_write

SHIPPED = Path(__file__).resolve().parents[1] / "speechkern" / "pretrained" / "general"


@pytest.fixture(scope="module")
def model():
    from speechkern.models.io import MaskModel

    return MaskModel.load(SHIPPED)


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Noise with a slow on/off envelope (syllable-like), float32 (n,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (rng.standard_normal(len(t)) * 0.05 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


# -- concurrent writers -----------------------------------------------------------------------------------------


def test_an_exclusive_write_keeps_the_file_another_process_created_meanwhile(tmp_path):
    path = tmp_path / "out.txt"

    def write(tmp: str) -> None:
        Path(tmp).write_text("mine")
        path.write_text("theirs")  # the other run finishes first

    with pytest.raises(SpeechkernError, match=r"out.txt: was created by another process"):
        atomic_write(path, write, replace=False)
    assert path.read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    atomic_write(path, lambda tmp: Path(tmp).write_text("mine"))  # replacing stays the default for caches, models
    assert path.read_text() == "mine"


def test_two_enhance_runs_on_one_output_fail_the_later_writer(model, tmp_path, monkeypatch):
    sf.write(tmp_path / "x.wav", speechlike(1.0), 16000)
    out = tmp_path / "x_enhanced.wav"
    real = enhance_module._enhance_at_rate

    def other_run_finishes_first(*args, **kwargs):
        if not out.exists():
            sf.write(out, np.zeros(100, np.float32), 16000)
        return real(*args, **kwargs)

    monkeypatch.setattr(enhance_module, "_enhance_at_rate", other_run_finishes_first)
    with pytest.raises(SpeechkernError, match="created by another process"):
        enhance_file(model, tmp_path / "x.wav", out)
    assert sf.info(out).frames == 100  # the other run's result, untouched
    assert not list(tmp_path.glob(".*.part"))


# -- inputs that change while read -----------------------------------------------------------------------------


def test_an_input_truncated_while_it_is_enhanced_fails_naming_it(model, tmp_path, monkeypatch):
    src = tmp_path / "long.wav"
    sf.write(src, speechlike(6.0), 16000)
    out = tmp_path / "long_enhanced.wav"
    real = enhance_module._enhance_at_rate

    def truncate_after_the_first_block(*args, **kwargs):
        os.truncate(src, 44 + 2 * 16000 * 2)  # the WAV header and 2 s of 16-bit samples are left
        return real(*args, **kwargs)

    monkeypatch.setattr(enhance_module, "_enhance_at_rate", truncate_after_the_first_block)
    with pytest.raises(SpeechkernError, match=r"long.wav: holds .* but its header promised .*changed while"):
        enhance_file(model, src, out, chunk_s=1.0)
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_a_header_promising_more_data_than_the_file_holds_is_said(tmp_path, caplog):
    src = tmp_path / "cut.wav"
    sf.write(src, speechlike(2.0), 16000)
    os.truncate(src, src.stat().st_size // 2)  # an interrupted copy: the header still says 2 s
    with caplog.at_level(logging.WARNING, logger="speechkern"):
        head = audio.info(src)
        y, _ = audio.load(src)
    assert head.frames == len(y) < 16000
    # said once, however often the header is read (it was said at every read)
    assert caplog.text.count("cut.wav: its header promises 2.000 s of audio but the file holds 0.99") == 1


@pytest.mark.parametrize("command", ["enhance", "mix", "oracle"])
def test_a_truncated_input_is_one_warning_line_on_the_command_line(tmp_path, capsys, command):
    """The truncation warning came once bare (Python's last-resort handler, outside the progress block) and once
    more as 'warning: ...' for enhance; two and three bare times for mix and oracle, which read the header again."""
    from conftest import run_cli

    src = tmp_path / "cut.wav"
    sf.write(src, speechlike(2.0), 16000)
    os.truncate(src, src.stat().st_size // 2)
    sf.write(tmp_path / "noise.wav", np.random.default_rng(0).standard_normal(32000) * 0.1, 16000)
    argv = {"enhance": ["enhance", str(src), "-q"],
            "mix": ["mix", str(src), str(tmp_path / "noise.wav"), "--snr", "0", "-o", str(tmp_path / "m.wav")],
            "oracle": ["oracle", str(src), str(tmp_path / "noise.wav"), "--snr", "0"]}[command]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "header promises" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"warning: {src}: its header promises 2.000 s of audio but the file holds 0.99")


def test_a_header_without_data_says_what_it_promised_not_nan(tmp_path, caplog):
    src = tmp_path / "header.wav"
    sf.write(src, speechlike(2.0), 16000)
    os.truncate(src, 44)
    with caplog.at_level(logging.WARNING, logger="speechkern"), pytest.raises(SpeechkernError, match="no samples"):
        audio.load(src)
    assert "header.wav: its header promises 2.000 s of audio but the file holds 0.000 s" in caplog.text
    assert "nan" not in caplog.text


# -- stereo that cancels, DC offset -----------------------------------------------------------------------------


def test_channels_in_opposite_phase_are_not_averaged_into_silence(model, tmp_path, caplog):
    y = speechlike(2.0)
    sf.write(tmp_path / "anti.wav", np.stack([y, -y], axis=1), 16000)
    sf.write(tmp_path / "mono.wav", y, 16000)
    result = enhance_file(model, tmp_path / "anti.wav", tmp_path / "anti_enhanced.wav")
    enhance_file(model, tmp_path / "mono.wav", tmp_path / "mono_enhanced.wav")
    stereo, _ = sf.read(tmp_path / "anti_enhanced.wav")
    mono, _ = sf.read(tmp_path / "mono_enhanced.wav")
    assert any("cancel when averaged" in note for note in result.notes)
    np.testing.assert_allclose(stereo[:, 0], mono, atol=2e-4)  # each channel enhanced on its own
    np.testing.assert_allclose(stereo[:, 1], -mono, atol=2e-4)
    with caplog.at_level(logging.WARNING, logger="speechkern"):
        loaded, _ = audio.load(tmp_path / "anti.wav")  # training data: the strongest channel, said
    assert np.std(loaded) > 0.5 * np.std(y) and "cancel when averaged" in caplog.text


def test_a_dc_offset_reaches_neither_the_level_nor_the_features(model, tmp_path):
    y = speechlike(2.0, seed=3)
    sf.write(tmp_path / "plain.wav", y, 16000, subtype="FLOAT")
    sf.write(tmp_path / "offset.wav", y + 0.2, 16000, subtype="FLOAT")
    enhance_file(model, tmp_path / "plain.wav", tmp_path / "plain_enhanced.wav")
    enhance_file(model, tmp_path / "offset.wav", tmp_path / "offset_enhanced.wav")
    plain, _ = sf.read(tmp_path / "plain_enhanced.wav")
    offset, _ = sf.read(tmp_path / "offset_enhanced.wav")
    assert abs(offset.mean()) < 1e-3  # the offset is not speech: removed
    np.testing.assert_allclose(offset, plain, atol=1e-4 * np.abs(plain).max() + 1e-6)
    # in memory too (the evaluation's path)
    a = enhance_module.enhance_signal(model, y)
    b = enhance_module.enhance_signal(model, y + 0.2)
    np.testing.assert_allclose(b, a, atol=1e-4 * np.abs(a).max() + 1e-6)


# -- stale outputs, globs ---------------------------------------------------------------------------------------


def test_an_output_older_than_its_changed_input_is_enhanced_again(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sf.write("x.wav", speechlike(1.0), 16000)
    assert run(["enhance", "x.wav", "--model", str(SHIPPED), "-q"], capsys)[0] == 0
    assert sf.info("x_enhanced.wav").frames == 16000
    code, _, err = run(["enhance", "x.wav", "--model", str(SHIPPED), "-q"], capsys)  # unchanged: kept
    assert code == 0 and "kept 1 existing output" in err
    sf.write("x.wav", speechlike(1.5, seed=1), 16000)  # the recording was replaced
    past = time.time() - 60
    os.utime("x_enhanced.wav", (past, past))
    code, _, err = run(["enhance", "x.wav", "--model", str(SHIPPED), "-q"], capsys)
    assert code == 0 and "enhancing 1 input again: x.wav changed since its output was written" in err
    assert sf.info("x_enhanced.wav").frames == 24000
    os.utime("x.wav", (past - 60, past - 60))  # same mtime order as a copy, but another length: stale too
    sf.write("x_enhanced.wav", np.zeros(10, np.float32), 16000)
    code, _, err = run(["enhance", "x.wav", "--model", str(SHIPPED), "-q"], capsys)
    assert code == 0 and "again" in err and sf.info("x_enhanced.wav").frames == 24000


def test_a_glob_rerun_leaves_its_own_outputs_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("in/a.wav", "in/b.wav"):
        Path(name).parent.mkdir(exist_ok=True)
        sf.write(name, speechlike(0.5), 16000)
    argv = ["enhance", "in/*.wav", "--model", str(SHIPPED), "-q"]
    assert run(argv, capsys)[0] == 0
    code, _, err = run(argv, capsys)
    assert code == 0 and "kept 2 existing outputs" in err and "nothing left to enhance" in err
    assert sorted(p.name for p in Path("in").iterdir()) == ["a.wav", "a_enhanced.wav", "b.wav", "b_enhanced.wav"]


# -- debris of killed runs ----------------------------------------------------------------------------------------


def test_sigterm_removes_the_part_file_like_ctrl_c(tmp_path):
    src = tmp_path / "long.wav"
    sf.write(src, speechlike(120.0), 16000)
    cli = Path(sys.executable).with_name("speechkern")
    proc = subprocess.Popen([str(cli), "enhance", str(src), "--model", str(SHIPPED), "--chunk-seconds", "1", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".*.part")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob(".*.part")), "the run never started writing"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]


def test_worker_processes_start_with_ctrl_c_blocked_and_the_tracker_quiet(monkeypatch):
    """Ctrl-C during `speechkern evaluate --workers 2` reaches the whole process group: workers caught importing
    printed KeyboardInterrupt tracebacks, and joblib's resource tracker two lines of UserWarning about "leaked"
    semaphores, around the command's one line. Workers now start with SIGINT blocked (this process stops them), and
    the command line's environment hides the tracker's warning."""
    code = ("import signal; from speechkern.parallel import process_pool; from joblib import delayed; "
            "masks = process_pool(2)(delayed(signal.pthread_sigmask)(signal.SIG_BLOCK, []) for _ in range(2)); "
            "print([sorted(int(s) for s in m) for m in masks])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([[int(signal.SIGINT)]] * 2), done.stdout
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # this process still takes Ctrl-C
    from speechkern_cli import main as cli_main

    monkeypatch.setenv("PYTHONWARNINGS", "default")
    cli_main._quiet_resource_tracker()
    cli_main._quiet_resource_tracker()
    assert os.environ["PYTHONWARNINGS"] == "default,ignore:resource_tracker:UserWarning"


def test_stray_part_files_in_a_folder_are_counted(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    sf.write("in/a.wav", speechlike(0.5), 16000)
    Path("in/.a_enhanced.wav.x1y2.part").write_bytes(b"RIFF")
    code, _, err = run(["enhance", "in", "--model", str(SHIPPED), "-q"], capsys)
    assert code == 0 and "found 1 stray .part file(s) in in: unfinished writes of interrupted runs" in err


# -- links and names --------------------------------------------------------------------------------------------


def test_a_link_to_a_file_outside_the_folder_is_written_inside_the_tree(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("outside").mkdir()
    Path("in").mkdir()
    sf.write("outside/x.wav", speechlike(0.5), 16000)
    sf.write("in/a.wav", speechlike(0.5), 16000)
    os.symlink(tmp_path / "outside" / "x.wav", "in/link.wav")
    code, _, err = run(["enhance", "in", "-o", "out", "--model", str(SHIPPED), "-q"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in Path("out").iterdir()) == ["a_enhanced.wav", "link_enhanced.wav"]
    code, _, err = run(["enhance", "in", "--model", str(SHIPPED), "-q"], capsys)
    assert code == 0, err
    assert Path("in/link_enhanced.wav").is_file() and sorted(p.name for p in Path("outside").iterdir()) == ["x.wav"]


def test_a_link_to_nothing_in_a_folder_is_a_warning_line_naming_it(tmp_path, capsys, monkeypatch, caplog):
    """A dangling symbolic link in an input folder (or matched by a pattern) was skipped without a word."""
    from speechkern.enhance import find_inputs

    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    sf.write("in/a.wav", speechlike(0.5), 16000)
    os.symlink(tmp_path / "gone.wav", "in/b.wav")
    assert find_inputs(["in"]).broken == [Path("in/b.wav")]
    code, _, err = run(["enhance", "in", "-o", "out", "--model", str(SHIPPED), "-q"], capsys)
    warning = f"warning: in/b.wav: a symbolic link to {tmp_path / 'gone.wav'}, which does not exist; skipped"
    assert code == 0 and warning in err.splitlines()[0], err
    assert sorted(p.name for p in Path("out").iterdir()) == ["a_enhanced.wav"]
    code, _, err = run(["enhance", "in/b*", "--model", str(SHIPPED), "-q"], capsys)
    assert code == 2 and err.strip().endswith("matches no files (only 1 symbolic link(s) to nothing, such as in/b.wav)")
    with caplog.at_level(logging.WARNING, logger="speechkern.audio"):  # a training folder says so too
        assert audio.find_audio("in") == [Path("in/a.wav")]
    assert "in/b.wav: a symbolic link to" in caplog.text


def test_file_names_that_are_not_utf8_are_enhanced_like_any_other(tmp_path, capsys):
    folder = os.fsencode(tmp_path / "in")
    os.mkdir(folder)
    sf.write(tmp_path / "in" / "a.wav", speechlike(0.5), 16000)
    odd = os.path.join(folder, b"b\xff.wav")
    with open(odd, "wb") as f:
        f.write((tmp_path / "in" / "a.wav").read_bytes())
    code, out, err = run(["enhance", str(tmp_path / "in"), "--model", str(SHIPPED), "-q"], capsys)
    assert code == 0, err
    assert os.path.exists(os.path.join(folder, b"b\xff_enhanced.wav")) and "b\\xff_enhanced.wav" in out


def test_an_output_name_too_long_for_the_file_system_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "a" * 240 + ".wav"  # a valid input name; "_enhanced" and the temporary file's additions are not
    sf.write(name, speechlike(0.5), 16000)
    code, _, err = run(["enhance", name, "--model", str(SHIPPED)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "the name is 253 bytes" in err, err
    assert sorted(os.listdir(tmp_path)) == [name]


def test_an_input_rewritten_at_the_same_length_while_it_is_enhanced_fails_naming_it(model, tmp_path, monkeypatch):
    """The file is read in passes (level, blocks, the guard's blend): a copy of another recording of the same
    length landing in between was blended silently with the first one's enhancement."""
    src = tmp_path / "long.wav"
    sf.write(src, speechlike(6.0), 16000)
    out = tmp_path / "long_enhanced.wav"
    real = enhance_module._enhance_at_rate

    def rewrite_after_the_first_block(*args, **kwargs):
        if not getattr(rewrite_after_the_first_block, "done", False):
            rewrite_after_the_first_block.done = True
            sf.write(src, speechlike(6.0)[::-1].copy(), 16000)  # same length, other samples
            os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
        return real(*args, **kwargs)

    monkeypatch.setattr(enhance_module, "_enhance_at_rate", rewrite_after_the_first_block)
    with pytest.raises(SpeechkernError, match=r"long.wav: changed while it was enhanced"):
        enhance_file(model, src, out, chunk_s=1.0)
    assert not out.exists() and not list(tmp_path.glob(".*.part"))
