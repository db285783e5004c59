"""``speechkern mix``, ``speechkern oracle`` and ``speechkern enhance``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import typer

from speechkern.errors import SpeechkernError

from .ui import console, progress_ui


def mix(
    clean: Path = typer.Argument(..., help="Clean speech file (wav/flac)."),
    noise: Path = typer.Argument(..., help="Noise file (wav/flac); looped if shorter than the speech."),
    snr: float = typer.Option(..., "--snr", help="Signal-to-noise ratio in dB over the whole utterance."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file for the mixture (wav/flac)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise segment's random offset."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output if it exists."),
) -> None:
    """Mix speech and noise at a set SNR (at the speech file's sample rate) and write the mixture."""
    from speechkern import audio
    from speechkern.mixtures import mix_files

    if output.exists() and not overwrite:
        raise SpeechkernError(f"{output}: exists already; choose another name or pass --overwrite")
    mixture, _, _, sr, info = mix_files(clean, noise, snr, seed=seed)
    peak = float(abs(mixture).max())
    if peak > 1.0:  # keep the SNR and avoid clipping: scale the whole mixture
        mixture = mixture / peak * 0.99
        info["scaled_by"] = 0.99 / peak
    audio.save(output, mixture, sr, overwrite=overwrite)
    console.print(f"wrote {output}: {len(mixture) / sr:.2f} s at {sr} Hz, SNR {snr:g} dB, noise offset "
                  f"{info['noise_offset']}, gain {info['gain']:.4g}")  # fmt: skip


def oracle(
    clean: Path = typer.Argument(..., help="Clean speech file."),
    noise: Path = typer.Argument(..., help="Noise file."),
    snr: float = typer.Option(..., "--snr", help="Mixture SNR in dB."),
    target: str = typer.Option("irm", "--target", help="irm (ideal ratio mask) or ibm (ideal binary mask)."),
    domain: str = typer.Option("cochleagram", "--domain", help="cochleagram (64-channel gammatone) or stft."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise segment (as in `speechkern mix`)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"noisy": {...}, "ideal": {...}} as JSON.'),
) -> None:
    """Apply the ideal mask to the mixture and print STOI, PESQ and SI-SDR of the noisy and ideal-mask outputs:
    the upper bound a mask estimator can reach on this speech and noise."""
    from pydantic import ValidationError

    from speechkern.oracle import oracle as run_oracle
    from speechkern.targets import TargetConfig

    try:
        config = TargetConfig(kind=target, domain=domain)
    except ValidationError as err:
        problem = err.errors()[0]
        raise SpeechkernError(f"--{problem['loc'][0]} {problem.get('input')!r}: {problem['msg']}") from None
    scores = run_oracle(clean, noise, snr, target=config, seed=seed)
    if as_json:
        print(json.dumps({k: {m: (None if isinstance(v, float) and math.isnan(v) else v) for m, v in s.items()}
                          for k, s in scores.items()}))  # fmt: skip
        return
    print(f"{'':8}{'STOI':>8}{'ESTOI':>8}{'PESQ':>8}{'PESQ-NB':>9}{'SI-SDR':>9}")
    for name, s in scores.items():
        print(f"{name:8}{s['stoi']:8.3f}{s['estoi']:8.3f}{s['pesq']:8.2f}{s['pesq_nb']:9.2f}{s['si_sdr']:9.1f}")


def enhance(
    inputs: list[str] = typer.Argument(..., help="Audio files, folders (searched recursively) or glob patterns."),
    model: Path = typer.Option(None, "--model", "-m", help="Run or model folder [default: newest run, else shipped]."),
    system: str = typer.Option(None, "--system", help="Which model of the run: kernel, kernel1 or dnn."),
    condition: str = typer.Option(None, "--condition", help="For per-condition runs: the condition's model."),
    output: Path = typer.Option(None, "-o", "--output", help="Output file (one input) or folder."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    per_channel: bool = typer.Option(False, "--per-channel", help="Enhance each channel separately."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    chunk_seconds: float = typer.Option(30.0, "--chunk-seconds", help="Length of the chunks long files are cut in."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Enhance noisy recordings with a trained model; outputs are named <input>_enhanced.wav unless -o says."""
    from speechkern.enhance import enhance_file, expand_inputs, output_for
    from speechkern.models.select import SHIPPED, find_model

    files = expand_inputs(inputs)
    mask_model, where = find_model(model, system=system, condition=condition, device=device)
    if model is None and where == SHIPPED:
        console.print(f"using the shipped general model (CC BY 4.0, see ATTRIBUTION.md there): {where}")
    elif model is None:
        console.print(f"using the newest trained model: {where}")
    done, failed = [], []
    started = time.perf_counter()
    with progress_ui(quiet=quiet):
        for f in files:
            try:
                done.append(enhance_file(mask_model, f, output_for(f, output, len(files)), per_channel=per_channel,
                                         overwrite=overwrite, chunk_s=chunk_seconds))  # fmt: skip
            except SpeechkernError as err:
                if len(files) == 1:
                    raise
                failed.append(str(err))
                console.print(f"[red]skipped[/] {err}")
    audio_s = sum(r.audio_seconds for r in done)
    compute_s = sum(r.compute_seconds for r in done)
    for r in done:
        console.print(f"{r.input} → {r.output}  ({r.audio_seconds:.1f} s, {r.channels} ch, {r.sr} Hz)")
    if done:
        speed = audio_s / max(compute_s, 1e-9)
        console.print(f"enhanced {len(done)} file(s), {audio_s:.1f} s of audio in {compute_s:.1f} s: {speed:.1f}× "
                      f"faster than real time (real-time factor {1 / speed:.3f}); total "
                      f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    if failed:
        raise SpeechkernError(f"{len(failed)} of {len(files)} files could not be enhanced (listed above)")
