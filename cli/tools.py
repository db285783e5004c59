"""``speechkern mix``, ``speechkern oracle`` and ``speechkern enhance``."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import typer

from speechkern.errors import SpeechkernError

from .ui import console, one_line, progress_ui, stdout, to_flags


def mix(
    clean: Path = typer.Argument(..., help="Clean speech file (wav, flac, ogg, mp3, sph, …)."),
    noise: Path = typer.Argument(..., help="Noise file; looped if shorter than the speech."),
    snr: float = typer.Option(..., "--snr", help="Signal-to-noise ratio in dB over the whole utterance."),
    output: str = typer.Option(..., "-o", "--output", help="Output file (its suffix sets the format)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the noise segment's random offset."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output if it exists."),
) -> None:
    """Mix speech and noise at a set SNR (at the speech file's sample rate) and write the mixture."""
    import numpy as np
    from rich.markup import escape

    from speechkern import audio
    from speechkern.mixtures import mix_files
    from speechkern.outputs import check_writable

    _check_snr(snr)
    if output.endswith(("/", os.sep)):  # Path() drops the slash, and a file of that name was written
        raise SpeechkernError(f"-o {output}: ends with a slash, so it names a folder, but mix writes one file; give "
                              "the file's name, such as noisy.wav")  # fmt: skip
    output = Path(output)
    audio.output_format(output)
    for name, source in (("speech", clean), ("noise", noise)):  # --overwrite replaces outputs, never an input
        if output.exists() and source.exists() and os.path.samefile(output, source):
            raise SpeechkernError(f"-o {output}: is the {name} input {source}, which the mixture would replace; "
                                  "choose another output name")  # fmt: skip
    if output.exists() and not overwrite:
        raise SpeechkernError(f"{output}: exists already; choose another name or pass --overwrite")
    check_writable(output)
    mixture, _, _, sr, info = mix_files(clean, noise, snr, seed=seed)
    if not np.all(np.isfinite(mixture)):
        raise SpeechkernError(f"--snr {snr:g}: the noise gain {info['gain']:.3g} overflows; choose a milder SNR")
    notes = []
    for name, path in (("clean", clean), ("noise", noise)):
        if info[f"{name}_channels"] > 1:
            notes.append(f"{path}: its {info[f'{name}_channels']} channels were averaged to one (the mixture is mono)")
        if info[f"{name}_sr"] != sr:
            notes.append(f"{path}: resampled from {info[f'{name}_sr']} Hz to the speech's {sr} Hz")
    peak = float(abs(mixture).max())
    if peak > 1.0:  # keep the SNR and avoid clipping: scale the whole mixture
        mixture = mixture / peak * 0.99
        info["scaled_by"] = 0.99 / peak
        notes.append(f"the mixture peaked at {peak:.3g} (full scale is 1), so it was scaled by {0.99 / peak:.3g} "
                     f"({20 * math.log10(0.99 / peak):.1f} dB) to avoid clipping; the SNR is unchanged")  # fmt: skip
    sources = [(info[f"{name}_format"], info[f"{name}_subtype"]) for name in ("clean", "noise")]
    subtype = audio.mixture_subtype(output, sources)
    if audio.silent_when_written(mixture, subtype):
        raise SpeechkernError(f"{output}: the mixture peaks at {peak:.3g} (full scale is 1), which rounds to silence "
                              f"in {output.suffix} files ({subtype}); raise the speech's level, or name the output "
                              ".wav for float inputs")  # fmt: skip
    audio.save(output, mixture, sr, overwrite=overwrite, subtype=subtype)
    for note in notes:
        console.print(f"note: {escape(one_line(to_flags(note)))}")
    stdout.print(f"wrote {output}: {len(mixture) / sr:.2f} s at {sr} Hz, SNR {snr:g} dB, noise offset "
                  f"{info['noise_offset']}, gain {info['gain']:.4g}")  # fmt: skip


def _check_snr(snr: float) -> None:
    from speechkern.recipe import MAX_SNR_DB  # the recipes' bound, for the same reason

    if not math.isfinite(snr):
        raise SpeechkernError(f"--snr {snr}: expected a finite number of dB, such as 5 or -5")
    if abs(snr) > MAX_SNR_DB:
        raise SpeechkernError(f"--snr {snr:g}: expected an SNR between -{MAX_SNR_DB:g} and {MAX_SNR_DB:g} dB")


def oracle(
    clean: Path = typer.Argument(..., help="Clean speech file."),
    noise: Path = typer.Argument(..., help="Noise file."),
    snr: float = typer.Option(..., "--snr", help="Mixture SNR in dB."),
    target: str = typer.Option("irm", "--target", help="irm (ideal ratio mask) or ibm (ideal binary mask)."),
    domain: str = typer.Option("cochleagram", "--domain", help="cochleagram (64-channel gammatone) or stft."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the noise segment (as in `speechkern mix`)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"noisy": {...}, "ideal": {...}} as JSON.'),
) -> None:
    """Apply the ideal mask to the mixture and print STOI, PESQ and SI-SDR of the noisy and ideal-mask outputs:
    the upper bound a mask estimator can reach on this speech and noise."""
    from pydantic import ValidationError
    from rich.markup import escape

    from speechkern.oracle import oracle as run_oracle
    from speechkern.targets import TargetConfig

    _check_snr(snr)
    try:
        config = TargetConfig(kind=target, domain=domain)
    except ValidationError as err:
        problem = err.errors()[0]
        option = {"kind": "target"}.get(str(problem["loc"][0]), problem["loc"][0])  # TargetConfig.kind is --target
        raise SpeechkernError(f"--{option} {problem.get('input')!r}: {problem['msg']}") from None
    scores = run_oracle(clean, noise, snr, target=config, seed=seed)
    if as_json:
        print(json.dumps({k: {m: (None if isinstance(v, float) and math.isnan(v) else v) for m, v in s.items()}
                          for k, s in scores.items()}))  # fmt: skip
        return
    print(f"{'':8}{'STOI':>8}{'ESTOI':>8}{'PESQ':>8}{'PESQ-NB':>9}{'SI-SDR':>9}")
    for name, s in scores.items():
        print(f"{name:8}{s['stoi']:8.3f}{s['estoi']:8.3f}{s['pesq']:8.2f}{s['pesq_nb']:9.2f}{s['si_sdr']:9.1f}")
    for name, s in scores.items():  # every nan above comes with its reason
        for problem in s.get("problems", []):
            console.print(f"note: {name}: {escape(problem)}")


def enhance(
    inputs: list[str] = typer.Argument(..., help="Audio files, folders (searched recursively) or glob patterns."),
    model: Path = typer.Option(None, "--model", "-m", help="Run or model folder [default: newest run, else shipped]."),
    system: str = typer.Option(None, "--system", help="kernel, kernel1 or dnn [default: the first the run has]."),
    condition: str = typer.Option(None, "--condition", help="For per-condition runs: the condition's model."),
    output: str = typer.Option(  # a string: a trailing slash (a folder) survives
        None,
        "-o",
        "--output",
        help="Output file, or folder that mirrors the inputs' tree [default: <input>_enhanced.<ext>].",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    per_channel: bool = typer.Option(
        False,
        "--per-channel",
        help="Enhance each channel alone (default: their average, written to every channel, unless the average cancels "
        "or a channel is 20 dB quieter than another).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    chunk_seconds: float = typer.Option(
        30.0,
        "--chunk-seconds",
        help="Seconds enhanced at a time, 1 or more: memory grows with it, not with the file's length.",
    ),
    clean_guard: bool = typer.Option(
        True,
        "--clean-guard/--no-clean-guard",
        help="Pass recordings the model estimates clean (about 20 dB SNR or more) unchanged, not masked.",
    ),
    atten_lim_db: float = typer.Option(
        None,
        "--atten-lim-db",
        help="Attenuate no time-frequency unit by more than this many dB (keeps some noise, fewer artefacts) "
        "[default: no limit].",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Enhance noisy recordings with a trained model. Each output is named <input>_enhanced with the input's
    format and encoding, beside the input or under -o; folders are searched for every format soundfile reads.

    Outputs that exist already are kept (one line says how many) unless --overwrite is given, so the same command
    run again enhances only what is missing; an output whose input changed since (newer, or of another length,
    rate or channel count) is enhanced again. Two runs never replace each other's output: the later one fails.

    Exit status: 0 when every input was enhanced or its output was kept; 2 when an input could not be enhanced or
    the command was refused (the reason on stderr); 130 when interrupted.
    """
    from rich.markup import escape

    from speechkern import audio
    from speechkern.device import resolve_device
    from speechkern.enhance import describe_speed, enhance_file, find_inputs, mask_floor, plan_outputs
    from speechkern.limits import check_model_memory
    from speechkern.limits import chunk_seconds as check_chunk
    from speechkern.models.select import SHIPPED, find_model

    resolve_device(device)
    mask_floor(atten_lim_db)  # refused before any work, by the library's own checks
    check_chunk(chunk_seconds)
    found = find_inputs(inputs)
    jobs = plan_outputs(found, output)
    earlier = [] if overwrite else [(f, o) for f, o in jobs if _is_earlier_output(f, o)]
    stale = [(f, o) for f, o in earlier if _is_stale(f, o)]
    kept = [job for job in earlier if job not in stale]
    for line in _skipped_lines(found.skipped + _stray_parts(jobs, found.skipped), {o.resolve() for _, o in jobs}):
        console.print(escape(one_line(line)))
    for path, kept_as in found.same[:5]:  # no output of its name: say why
        line = f"{path}: the same file as {kept_as} (a symbolic link, or another path to it); enhanced once, as it"
        console.print(f"note: {escape(one_line(line))}")
    if len(found.same) > 5:
        console.print(f"note: and {len(found.same) - 5} more paths to files given already; each enhanced once")
    for link in found.broken[:5]:
        console.print(f"[yellow]warning:[/] {escape(one_line(audio.broken_link_note(link)))}")
    if len(found.broken) > 5:
        console.print(f"[yellow]warning:[/] and {len(found.broken) - 5} more symbolic links to nothing, skipped")
    jobs = [job for job in jobs if job not in kept]
    if kept:
        console.print(escape(_kept_line([o for _, o in kept], everything=not jobs)))
    if stale:
        n = len(stale)
        console.print(escape(f"enhancing {n} input{'s' if n > 1 else ''} again: {_names([f for f, _ in stale])} "
                             f"changed since {'their outputs were' if n > 1 else 'its output was'} written (newer, or "
                             "another length, rate or channel count)"))  # fmt: skip
    mask_model, where = find_model(model, system=system, condition=condition, device=device)
    check_model_memory(mask_model, where, chunk_seconds, longest_s=_longest_seconds([f for f, _ in jobs]))  # once
    if model is None and where == SHIPPED:
        console.print(f"no trained run in {escape(str(Path('runs').resolve()))} or runs/index.txt; using the shipped "
                      f"general model (CC BY 4.0, see ATTRIBUTION.md there): {escape(str(where))}")  # fmt: skip
    elif model is None:
        console.print(f"using the newest trained model: {escape(str(where))}")
    done, failed = [], []
    started = time.perf_counter()
    with progress_ui(quiet=quiet):
        for f, out in jobs:
            try:
                result = enhance_file(mask_model, f, out, per_channel=per_channel,
                                      overwrite=overwrite or (f, out) in stale, chunk_s=chunk_seconds,
                                      clean_guard=clean_guard, atten_lim_db=atten_lim_db)  # fmt: skip
            except SpeechkernError as err:
                if str(f) not in str(err):  # name the file whatever step failed (a NaN sample, a short file)
                    err = SpeechkernError(f"{f}: {err}")
                if len(jobs) == 1:
                    raise err from None
                failed.append(f)
                console.print(f"[red]skipped[/] {escape(one_line(to_flags(str(err))))}")
                continue
            done.append(result)
            for note in result.notes:
                console.print(f"note: {escape(one_line(to_flags(note)))}")
    audio_s = sum(r.audio_seconds for r in done)
    compute_s = sum(r.compute_seconds for r in done)
    for r in done:
        stdout.print(escape(one_line(f"{r.input} → {r.output}  ({r.audio_seconds:.1f} s, {r.channels} ch, {r.sr} Hz)")))
    if done:
        console.print(f"enhanced {len(done)} of {len(jobs)} file(s), {audio_s:.1f} s of audio in {compute_s:.1f} s: "
                      f"{describe_speed(audio_s, compute_s)}; total {time.perf_counter() - started:.1f} s")  # fmt: skip
    if failed:
        names = ", ".join(str(f) for f in failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise SpeechkernError(f"{len(failed)} of {len(jobs)} files could not be enhanced: {names} (reasons above)")


def _is_earlier_output(source: Path, out: Path) -> bool:
    """Whether ``out`` is a file an earlier run wrote (not the input itself, which enhance_file refuses)."""
    return out.is_file() and out.resolve() != source.resolve()


def _longest_seconds(paths: list[Path]) -> float:
    """The longest duration among ``paths`` in seconds (files that cannot be read count as 0: refused later)."""
    from speechkern import audio

    longest = 0.0
    for path in paths:
        try:
            head = audio.info(path)
        except SpeechkernError:
            continue
        longest = max(longest, head.frames / head.samplerate)
    return longest or math.inf


def _is_stale(source: Path, out: Path) -> bool:
    """Whether the input changed after its kept output was written: modified later, or its length, rate or
    channel count differs from the output's (an output that cannot be read is stale too)."""
    from speechkern import audio

    try:
        if source.stat().st_mtime > out.stat().st_mtime:
            return True
        a, b = audio.info(source), audio.info(out)
    except (OSError, SpeechkernError):
        return True
    exact = a.format == b.format == "WAV" or {a.format, b.format} <= {"WAV", "FLAC", "AIFF", "W64", "RF64", "CAF"}
    slack = 0 if exact else audio.SHORT_READ_SLACK  # a decoder's padding is no change
    return (a.samplerate, a.channels) != (b.samplerate, b.channels) or abs(a.frames - b.frames) > slack


def _names(paths: list[Path], most: int = 3) -> str:
    shown = one_line(", ".join(str(p) for p in paths[:most]))
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _kept_line(outputs: list[Path], everything: bool) -> str:
    """One line for the outputs that exist already and were left as they are."""
    n = len(outputs)
    rest = ", nothing left to enhance" if everything else ""
    return (f"kept {n} existing output{'s' if n > 1 else ''} ({_names(outputs)}){rest}; pass --overwrite to "
            f"replace {'them' if n > 1 else 'it'}")  # fmt: skip


def _stray_parts(jobs: list[tuple[Path, Path]], known: list[Path]) -> list[Path]:
    """Temporary files of this run's outputs left in their folders by a run that was killed (``kill -9``, power
    loss): ``.<output name>.XXXXXXXX.part`` (:func:`speechkern.outputs.atomic_write`), not yet in ``known``."""
    seen = {p.resolve() for p in known}
    names = {}
    for _, out in jobs:
        names.setdefault(out.parent, set()).add(out.name)
    found = []
    for folder, outputs in names.items():
        if folder.is_dir():
            found += [p for p in sorted(folder.glob(".*.part")) if p.name[1:].rsplit(".", 2)[0] in outputs
                      and p.resolve() not in seen]  # fmt: skip
    return found


def _skipped_lines(skipped: list[Path], outputs: set[Path]) -> list[str]:
    """What the folder search left out: files that are not audio speechkern reads, and earlier outputs that are
    not ``outputs`` of this run (those are kept, see :func:`_kept_line`, or replaced with --overwrite)."""
    from collections import Counter

    from speechkern.enhance import ENHANCED_SUFFIX

    earlier = [p for p in skipped if p.stem.endswith(ENHANCED_SUFFIX)]
    debris = [p for p in skipped if p.name.startswith(".") and p.suffix == ".part"]
    other = [p for p in skipped if p not in earlier and p not in debris]
    earlier = [p for p in earlier if p.resolve() not in outputs]
    lines = []
    if other:
        kinds = Counter(p.suffix.lower() or "(no suffix)" for p in other)
        parts = ", ".join(f"{n} {suffix}" for suffix, n in kinds.most_common())
        lines.append(f"skipped {len(other)} file(s) in the folders that are not audio speechkern reads: {parts}")
    if earlier:
        lines.append(f"skipped {len(earlier)} earlier output(s) *{ENHANCED_SUFFIX} in the folders: outputs are not "
                     "enhanced again")  # fmt: skip
    if debris:
        folders = sorted({str(p.parent) for p in debris})
        lines.append(f"found {len(debris)} stray .part file(s) in {', '.join(folders[:3])}"
                     f"{' and more' if len(folders) > 3 else ''}: unfinished writes of interrupted runs, safe to "
                     "delete")  # fmt: skip
    return lines
