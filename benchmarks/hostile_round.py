"""A hostile round against the installed ``speechkern`` command (issue 27): odd files, concurrent runs, signals.

Each case runs the real command in a scratch folder and is classed as ok, or as a traceback, a crash (killed by a
signal), a hang (past its time limit) or a lost/wrong output; the counts are printed with the load. Run with
``python benchmarks/hostile_round.py [--only NAME ...]``; a few minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

CLI = [str(Path(sys.executable).with_name("speechkern"))]
MODEL = str(Path(__file__).resolve().parents[1] / "speechkern" / "pretrained" / "general")


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (rng.standard_normal(len(t)) * 0.05 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def sk(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", "hang")


def verdict(done: subprocess.CompletedProcess, wrong: bool = False) -> str:
    if done.returncode == 124 and done.stderr == "hang":
        return "hang"
    if done.returncode < 0:
        return "crash"
    if "Traceback" in done.stderr:
        return "traceback"
    return "lost/wrong output" if wrong else "ok"


def rms(path: str | Path) -> float:
    return float(np.sqrt(np.mean(np.square(sf.read(path)[0]))))


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@case
def concurrent_writers():
    sf.write("a.wav", speechlike(3), 16000)
    sf.write("b.wav", speechlike(3, seed=1), 16000)
    procs = [subprocess.Popen([*CLI, "enhance", n, "-o", "same.wav", "-m", MODEL, "-q"], stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True) for n in ("a.wav", "b.wav")]  # fmt: skip
    errs = [p.communicate(timeout=120)[1] for p in procs]
    codes = [p.returncode for p in procs]
    both_claim = codes == [0, 0] and all("enhanced 1 of 1" in e for e in errs)
    return verdict(subprocess.CompletedProcess([], max(codes), "", "".join(errs)), wrong=both_claim)


def enhancing(seconds: float) -> subprocess.Popen:
    """``speechkern enhance long.wav`` of ``seconds`` seconds, once it has started writing its output."""
    sf.write("long.wav", speechlike(seconds), 16000)
    p = subprocess.Popen([*CLI, "enhance", "long.wav", "-m", MODEL, "--chunk-seconds", "1", "-q"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    while not list(Path().glob(".*.part")) and p.poll() is None:
        time.sleep(0.05)
    return p


@case
def truncated_while_read():
    p = enhancing(40)
    os.truncate("long.wav", 44 + 16000 * 2 * 5)
    err = p.communicate(timeout=120)[1]
    return verdict(subprocess.CompletedProcess([], p.returncode, "", err), wrong=p.returncode == 0)


@case
def header_claims_more():
    sf.write("cut.wav", speechlike(2), 16000)
    os.truncate("cut.wav", 44 + 16000 * 2)
    done = sk("enhance", "cut.wav", "-m", MODEL, "-q")
    return verdict(done, wrong="header promises" not in done.stderr)


@case
def stereo_cancels():
    y = speechlike(2)
    sf.write("anti.wav", np.stack([y, -y], 1), 16000)
    done = sk("enhance", "anti.wav", "-m", MODEL, "-q")
    return verdict(done, wrong=done.returncode != 0 or rms("anti_enhanced.wav") < 1e-3)


@case
def dc_offset():
    y = speechlike(2)
    sf.write("plain.wav", y, 16000, subtype="FLOAT")
    sf.write("dc.wav", y + 0.2, 16000, subtype="FLOAT")
    done = sk("enhance", "plain.wav", "dc.wav", "-m", MODEL, "-q")
    a, b = sf.read("plain_enhanced.wav")[0], sf.read("dc_enhanced.wav")[0]
    return verdict(done, wrong=float(np.max(np.abs(a - b))) > 0.01 * float(np.max(np.abs(a))))


@case
def stale_output():
    sf.write("x.wav", speechlike(1), 16000)
    sk("enhance", "x.wav", "-m", MODEL, "-q")
    sf.write("x.wav", speechlike(2, seed=2), 16000)
    past = time.time() - 100
    os.utime("x_enhanced.wav", (past, past))
    done = sk("enhance", "x.wav", "-m", MODEL, "-q")
    return verdict(done, wrong=sf.info("x_enhanced.wav").frames != 32000)


@case
def glob_rerun():
    Path("d").mkdir()
    sf.write("d/a.wav", speechlike(1), 16000)
    sk("enhance", "d/*.wav", "-m", MODEL, "-q")
    done = sk("enhance", "d/*.wav", "-m", MODEL, "-q")
    return verdict(done, wrong=done.returncode != 0)


@case
def sigterm_debris():
    p = enhancing(60)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    return verdict(subprocess.CompletedProcess([], 1, "", err), wrong=bool(list(Path().glob(".*.part"))))


@case
def part_files_counted():
    Path("d").mkdir()
    sf.write("d/a.wav", speechlike(1), 16000)
    Path("d/.a_enhanced.wav.abcdefgh.part").write_bytes(b"x")
    done = sk("enhance", "d", "-m", MODEL, "-q")
    return verdict(done, wrong="stray .part" not in done.stderr)


@case
def pesq_many_utterances():
    t = np.arange(30 * 16000) / 16000  # 60 bursts: the pesq C code overruns its table of utterances
    gated = (np.random.default_rng(0).standard_normal(len(t)) * 0.05 * ((t % 0.5) < 0.25)).astype(np.float32)
    sf.write("c.wav", gated, 16000)
    sf.write("n.wav", np.random.default_rng(1).standard_normal(len(t)).astype(np.float32) * 0.05, 16000)
    done = sk("oracle", "c.wav", "n.wav", "--snr", "5", "--json", timeout=300)
    return verdict(done, wrong=done.returncode != 0)


@case
def non_utf8_names():
    Path("d").mkdir()
    sf.write("d/a.wav", speechlike(1), 16000)
    shutil.copy("d/a.wav", os.path.join(b"d", b"b\xff.wav"))
    done = sk("enhance", "d", "-m", MODEL, "-q")
    return verdict(done, wrong=not os.path.exists(os.path.join(b"d", b"b\xff_enhanced.wav")))


@case
def symlink_outside():
    Path("in").mkdir()
    Path("outside").mkdir()
    sf.write("outside/x.wav", speechlike(1), 16000)
    os.symlink("../outside/x.wav", "in/link.wav")
    a = sk("enhance", "in", "-o", "out", "-m", MODEL, "-q")
    b = sk("enhance", "in", "-m", MODEL, "-q")
    outside = sorted(os.listdir("outside")) != ["x.wav"]
    return worst(verdict(a, wrong=a.returncode != 0), verdict(b, wrong=outside))


@case
def train_out_is_a_file():
    Path("file").write_text("x")
    return verdict(sk("train", str(Path(MODEL).parents[2] / "recipes" / "demo"), "--out", "file"))


@case
def recipe_nested_deep():
    recipe = str(Path(MODEL).parents[2] / "recipes" / "demo")
    a = sk("train", recipe, "--set", "data.snrs=" + "[" * 5000 + "]" * 5000, "--out", "r")
    b = sk("train", recipe, "--set", "name=a\x01b", "--out", "r")
    return worst(verdict(a), verdict(b))


@case
def absurd_sample_rate():
    sf.write("one.wav", np.zeros(88000, np.float32), 16000)
    data = bytearray(Path("one.wav").read_bytes())
    data[24:32] = struct.pack("<II", 1, 2)
    Path("one.wav").write_bytes(bytes(data))
    done = sk("enhance", "one.wav", "-m", MODEL, "-q", timeout=60)
    return verdict(done, wrong=done.returncode != 2)


@case
def fifo_input():
    os.mkfifo("pipe.wav")
    return verdict(sk("enhance", "pipe.wav", "-m", MODEL, timeout=30))


@case
def ogg_at_384_khz():
    sf.write("hi.wav", speechlike(0.5, sr=384000), 384000)
    return verdict(sk("enhance", "hi.wav", "-o", "hi.ogg", "-m", MODEL, "-q"))


@case
def mp3_at_96_khz():
    sf.write("hi.wav", speechlike(0.5, sr=96000), 96000)
    done = sk("enhance", "hi.wav", "-o", "hi.mp3", "-m", MODEL, "-q")
    return verdict(done, wrong=".part" in done.stderr)  # a temporary path named in the message


@case
def output_name_too_long():
    name = "a" * 240 + ".wav"
    sf.write(name, speechlike(0.5), 16000)
    return verdict(sk("enhance", name, "-m", MODEL, "-q"))


@case
def chunk_seconds_inf():
    sf.write("x.wav", speechlike(1), 16000)
    return verdict(sk("enhance", "x.wav", "-m", MODEL, "--chunk-seconds", "inf", "-q"))


@case
def empty_and_folder_named_wav():
    Path("empty.wav").write_bytes(b"")
    Path("dir.wav").mkdir()
    return worst(verdict(sk("enhance", "empty.wav", "-m", MODEL)), verdict(sk("enhance", "dir.wav", "-m", MODEL)))


@case
def symlink_loop_in_tree():
    Path("t/sub").mkdir(parents=True)
    sf.write("t/sub/a.wav", speechlike(0.5), 16000)
    os.symlink("..", "t/sub/loop")
    return verdict(sk("enhance", "t", "-m", MODEL, "-q", timeout=60))


@case
def losses_help_startup():
    seconds = {}
    for group in ("enhance", "losses"):  # against another command's help, so that the load cancels out
        started = time.perf_counter()
        done = sk(group, "--help")
        seconds[group] = time.perf_counter() - started
    return verdict(done, wrong=seconds["losses"] > 2 * seconds["enhance"] + 0.3)


def worst(*verdicts: str) -> str:
    return next((v for v in verdicts if v != "ok"), "ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="run only these cases")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    args = parser.parse_args()
    results = {}
    for name, fn in CASES.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
            here = os.getcwd()
            os.chdir(folder)
            try:
                results[name] = fn()
            except Exception as err:  # the harness's own failure: say so, do not count it as the command's
                results[name] = f"harness error: {type(err).__name__}: {err}"
            finally:
                os.chdir(here)
        print(f"{name:28} {results[name]}", flush=True)
    counts = {k: sum(v == k for v in results.values()) for k in ("ok", "traceback", "crash", "hang",
                                                                  "lost/wrong output")}  # fmt: skip
    print(f"{len(results)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; load {os.getloadavg()}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
