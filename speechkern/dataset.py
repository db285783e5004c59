"""From a recipe to training arrays: noises, mixture manifests, and cached per-mixture features and targets.

Everything here is deterministic in the recipe's seed: the manifests record each mixture (clean file, noise
file, offset, gain), features and targets are cached on disk by a hash of their configuration and input, and
the frame subsets drawn for training are seeded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from speechkern import audio, features, mixtures, targets
from speechkern.cache import ArrayCache, content_key
from speechkern.corpora import SPLITS, Utterance, load_splits
from speechkern.errors import SpeechkernError
from speechkern.mixtures import Mixture
from speechkern.models.mask_model import waveform_features
from speechkern.outputs import write_text
from speechkern.progress import report
from speechkern.recipe import found_from_run

logger = logging.getLogger(__name__)

GENERATED_NOISES = ("ssn", "babble")
CACHE_VERSION = 1  # bump when feature or target code changes what it computes


# ---------------------------------------------------------------------------------------------------------
# Noises and manifests


def prepare_noises(recipe, train: Sequence[Utterance], run_dir: Path) -> dict[str, str]:
    """Noise name → audio file, for each entry of ``data.noises``:

    - ``ssn``, ``babble``: generated from the training speech, written under ``run_dir/noises``;
    - ``dir``: each recording of ``data.noise_dir``, named by its file stem;
    - ``manifest``: each noise row of ``data.manifest`` (licences filtered by ``data.exclude_licences``);
    - ``noisex:NAME``: the NOISEX-92 recording NAME (babble, factory1, engine, oproom, ...) found below
      ``data.noisex_root`` or ``$NOISEX_ROOT`` (see :mod:`speechkern.corpora.noisex`), named NAME;
    - anything else: the path of an audio file, named by its stem.
    """
    from speechkern.corpora import noisex

    data = recipe.data
    out: dict[str, str] = {}

    def add(name: str, path: str, spec: str) -> None:
        if name in out:  # two entries with one name would silently share results and per-condition models
            raise SpeechkernError(f"noise {spec!r}: another entry of data.noises is also named {name!r}; "
                                  "each noise needs its own name")  # fmt: skip
        out[name] = path

    for spec in data.noises:
        if spec == "dir":
            if not data.noise_dir:
                raise SpeechkernError(
                    "noise 'dir' needs a folder of recordings: add the recipe override data.noise_dir=DIR"
                )
            files = audio.find_audio(data.noise_dir)
            if not files:
                raise SpeechkernError(f"{data.noise_dir}: no noise recordings found (searched recursively for "
                                      f"{audio.FORMATS_HELP} files)")  # fmt: skip
            for f in files:
                add(f.stem if f.stem not in out else f"{f.parent.name}-{f.stem}", str(f), spec)
        elif spec == "manifest":
            from speechkern.corpora.manifest import read_rows

            for r in read_rows(data.manifest, "noise", data.exclude_licences):
                add(r.path.stem if r.path.stem not in out else f"{r.path.parent.name}-{r.path.stem}", str(r.path), spec)
        elif spec in GENERATED_NOISES:
            add(spec, str(_generated_noise(spec, recipe, train, run_dir)), spec)
        elif spec.lower().startswith("noisex:"):
            name = spec.split(":", 1)[1].strip()
            if not name:
                raise SpeechkernError(f"noise {spec!r}: expected noisex:NAME, for example noisex:factory1")
            add(name, str(noisex.resolve(name, data.noisex_root, run_dir / "noises")), spec)
        else:
            path = Path(spec)
            if not path.is_file():
                raise SpeechkernError(
                    f"noise {spec!r}: expected 'ssn', 'babble', 'dir' (recordings in data.noise_dir), "
                    "'noisex:NAME' (a NOISEX-92 recording in data.noisex_root) or an audio file"
                )
            add(path.stem, str(path), spec)
    return out


def _generated_noise(kind: str, recipe, train: Sequence[Utterance], run_dir: Path) -> Path:
    data = recipe.data
    path = run_dir / "noises" / f"{kind}.wav"
    if path.is_file():
        return path
    n_samples = int(data.generated_noise_s * data.sr)
    rng = np.random.default_rng(data.seed)
    pick = rng.permutation(len(train))[:200]  # enough speech for a stable long-term spectrum / babble
    speech = [(train[i].talker, audio.load(train[i].path, sr=data.sr)[0]) for i in pick]
    if kind == "ssn":
        y = mixtures.speech_shaped_noise(mixtures.long_term_spectrum(s for _, s in speech), n_samples, data.seed)
    else:
        by_talker: dict[str, list[np.ndarray]] = {}
        for talker, s in speech:
            by_talker.setdefault(talker, []).append(s)
        groups = list(by_talker.values())
        voices = 2 * len(mixtures.parts(n_samples, data.val_noise_share))  # at least two per part
        if len(groups) < voices:  # too few talkers for disjoint parts: utterances as voices (still disjoint)
            groups = [[s] for _, s in speech]
        remedy = f"raise data.n_train (now {data.n_train}) or take 'babble' out of data.noises"  # in recipe terms
        y = mixtures.babble(groups, n_samples, data.seed, data.babble_talkers, data.val_noise_share, remedy)
    audio.save(path, y, data.sr, overwrite=True, subtype="FLOAT")
    return path


MANIFEST_RECORD = "index.json"  # in run_dir/manifests: each split's row count and SHA-256, as written


def read_run_manifest(run_dir: Path, split: str) -> list[Mixture]:
    """The mixtures of ``split`` in ``run_dir/manifests`` (:func:`mixtures.read_manifest`), checked against what
    the run recorded when it wrote them (:data:`MANIFEST_RECORD`; runs from before it have none), with the audio
    of a relative path found from the run (:func:`_found_from_run`).

    Raises SpeechkernError naming the file when it holds another number of rows than the run wrote (a file cut at
    a line boundary reads as a shorter manifest) or other bytes.
    """
    path = Path(run_dir) / "manifests" / f"{split}.jsonl"
    rows = mixtures.read_manifest(path)  # first: a damaged row is named with its line
    recorded = _manifest_record(path.parent).get(split)
    if recorded is not None:
        wrote = recorded.get("mixtures")
        rebuild = f"(the run's {MANIFEST_RECORD} records it); delete it to have the manifests rebuilt from the recipe"
        if len(rows) != wrote:
            raise SpeechkernError(f"{path}: holds {len(rows)} mixture rows where the run wrote {wrote}, so it was cut "
                                  f"or changed since {rebuild}")  # fmt: skip
        if hashlib.sha256(path.read_bytes()).hexdigest() != recorded.get("sha256"):
            raise SpeechkernError(f"{path}: holds other bytes than the manifest the run wrote {rebuild}")
    return [_found_from_run(m, Path(run_dir)) for m in rows]


def _manifest_record(folder: Path) -> dict[str, dict]:
    """split → {"mixtures", "sha256"} as :func:`build_manifests` recorded them; {} where there is no readable
    record (a run from before it, or one stopped while writing its manifests)."""
    try:
        record = json.loads((folder / MANIFEST_RECORD).read_text(encoding="utf-8"))["splits"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in record.items() if isinstance(v, dict)} if isinstance(record, dict) else {}


def _found_from_run(m: Mixture, run_dir: Path) -> Mixture:
    """``m`` with a relative clean or noise path that is missing here found below a folder that holds the run: a
    manifest from before paths were stored absolute holds them relative to the folder the run was trained from,
    which is usually one of those (``runs/<name>`` of the default)."""
    found = {}
    for name in ("clean", "noise"):
        path = Path(getattr(m, name))
        if path.is_absolute() or path.exists():
            continue
        hit = found_from_run(path, run_dir, Path.is_file)
        if hit is not None:
            found[name] = hit
    return replace(m, **found) if found else m


def check_sources(run_dir: Path, splits: dict[str, Sequence[Mixture]]) -> None:
    """Refuse, before any work, a run whose mixtures' audio (of ``splits``, split → rows) is no longer where the run
    recorded it (the data folder moved or deleted after training), naming the run, the first missing file, how
    many more, and what to do; a bare "no such file" came from deep inside the feature extraction."""
    paths = list(dict.fromkeys(p for rows in splits.values() for m in rows for p in (m.clean, m.noise)))
    gone = [p for p in paths if not Path(p).exists()]
    if not gone:
        return
    more = f" and {len(gone) - 1} more of its {len(paths)} audio files no longer exist" if len(gone) > 1 else (
        " no longer exists")  # fmt: skip
    under = os.path.commonpath([str(Path(p).parent) for p in gone])
    listed = " and ".join(str(run_dir / "manifests" / f"{s}.jsonl") for s in splits)
    raise SpeechkernError(f"{run_dir}: the run's {'/'.join(splits)} audio is not where the run recorded it: "
                          f"{gone[0]}{more} (under {under}); put the data back there, or link its new place to that "
                          f"path (the run reads its mixtures from the paths in {listed})")  # fmt: skip


def build_manifests(recipe, run_dir: Path) -> dict[str, list[Mixture]]:
    """Mixtures of every split for the recipe; read back from ``run_dir/manifests`` when they exist already
    (:func:`read_run_manifest`). Audio paths are stored absolute, so the run reads from any working directory."""
    folder = run_dir / "manifests"
    if all((folder / f"{s}.jsonl").is_file() for s in SPLITS):
        return {s: read_run_manifest(run_dir, s) for s in SPLITS}
    data = recipe.data
    utterances = load_splits(data, run_dir / "sources")
    for split in SPLITS:
        if not utterances[split]:
            key = f"data.n_{split}"
            raise SpeechkernError(f"the {split} split is empty (corpus {data.corpus!r}, {key} = "
                                  f"{getattr(data, f'n_{split}')}); give more clean utterances, or the recipe override "
                                  f"{key}=N with N ≥ 1")  # fmt: skip
    paired_only = all(u.noisy for split in SPLITS for u in utterances[split])
    noises = {} if paired_only else prepare_noises(recipe, utterances["train"], run_dir)
    noise_audio = {name: audio.load(path, sr=data.sr)[0] for name, path in noises.items()}
    conditions = conditions_of(data, noises) if noises else []
    max_samples = int(data.max_utterance_s * data.sr)
    out: dict[str, list[Mixture]] = {}
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng([data.seed, split_index])
        pairing = data.test_pairing if split == "test" else data.pairing
        rows: list[Mixture] = []
        for i, utt in enumerate(utterances[split]):
            clean, _ = audio.load(utt.path, sr=data.sr)
            clean = clean[:max_samples]
            if utt.noisy:
                noisy, _ = audio.load(utt.noisy, sr=data.sr)
                rows.append(mixtures.paired_mixture(
                    mixture_id=utt.id, split=split, clean_path=os.path.abspath(utt.path), clean=clean,
                    noisy_path=os.path.abspath(utt.noisy),
                    noisy=noisy, condition=utt.condition or recipe.data.corpus, sr=data.sr, talker=utt.talker,
                ))  # fmt: skip
                continue
            if pairing == "all":
                chosen = conditions
            elif split == "test" or data.conditions_per_utterance == 1:
                chosen = [conditions[int(rng.integers(len(conditions)))]]
            else:
                k = min(data.conditions_per_utterance, len(conditions))
                chosen = [conditions[j] for j in sorted(rng.choice(len(conditions), size=k, replace=False))]
            for name, snr in chosen:
                seed = int(rng.integers(2**31))
                mixture_id = f"{utt.id}__{name}_{snr:g}dB"
                rows.append(
                    mixtures.draw_mixture(
                        mixture_id=mixture_id,
                        split=split,
                        clean_path=os.path.abspath(utt.path),
                        clean=clean,
                        noise_path=os.path.abspath(noises[name]),
                        noise_name=name,
                        noise=noise_audio[name],
                        snr_db=snr,
                        seed=seed,
                        sr=data.sr,
                        talker=utt.talker,
                        val_share=data.val_noise_share,
                    )  # fmt: skip
                )
            report("manifests", i + 1, len(utterances[split]), f"mixing {split}")
        mixtures.write_manifest(folder / f"{split}.jsonl", rows)
        out[split] = rows
    record = {s: {"mixtures": len(out[s]), "sha256": hashlib.sha256((folder / f"{s}.jsonl").read_bytes()).hexdigest()}
              for s in SPLITS}  # fmt: skip
    write_text(folder / MANIFEST_RECORD, json.dumps({"splits": record}, indent=2))
    return out


def conditions_of(data, noises: dict[str, str]) -> list[tuple[str, float]]:
    """(noise, SNR) pairs to mix: ``data.conditions`` ("NOISE@SNR" each) if given, else every noise × SNR."""
    if not data.conditions:
        return [(name, float(snr)) for name in noises for snr in data.snrs]
    out = []
    for item in data.conditions:
        name, sep, snr = item.rpartition("@")
        try:
            value = float(snr)
        except ValueError:
            value = None
        if not sep or value is None:
            raise SpeechkernError(f"condition {item!r}: expected NOISE@SNR, for example ssn@-5")
        if name not in noises:
            raise SpeechkernError(f"condition {item!r}: no noise {name!r}; the recipe's noises are {', '.join(noises)}")
        out.append((name, value))
    return out


# ---------------------------------------------------------------------------------------------------------
# Per-mixture features and targets


@dataclass
class FrameData:
    """Frames of a list of mixtures: features (N, base_dim) unnormalised, targets (N, n_units), and the
    first frame of each mixture in ``offsets`` (length n_mixtures + 1)."""

    features: np.ndarray
    targets: np.ndarray
    offsets: np.ndarray
    mixtures: list[Mixture]

    def __len__(self) -> int:
        return len(self.features)

    def frames_of(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


@lru_cache(maxsize=64)
def _noise(path: str, sr: int) -> np.ndarray:
    return audio.load(path, sr=sr)[0]


def example_key(mixture: np.ndarray, clean: np.ndarray, feature_config, target_config, snr_db: float) -> str:
    """Cache key of one mixture's features and target: the code version, both configurations and the audio."""
    return content_key(
        CACHE_VERSION, feature_config.model_dump(mode="json"), target_config.model_dump(mode="json"), snr_db,
        mixture, clean,
    )  # fmt: skip


def compute_example(
    m: Mixture, feature_config, target_config, cache_root: str | None, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """Features (n_frames, base_dim) and target (n_frames, n_units) of one mixture, from the cache if there."""
    clean, _ = audio.load(m.clean, sr=m.sr)
    mix, clean, noise = m.build_from(clean, _noise(m.noise, m.sr))
    cache = ArrayCache(cache_root)
    key = example_key(mix, clean, feature_config, target_config, m.snr_db)
    cached = cache.get(key)
    if cached is not None:
        return cached
    arrays = {
        "features": waveform_features(mix, m.sr, feature_config, device=device),
        "target": targets.compute_target(clean, noise, target_config, feature_config, snr_db=m.snr_db, device=device).T,
    }
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    cache.put(key, arrays)
    return arrays


def _compute_chunk(rows, feature_config, target_config, cache_root, device="cpu") -> list[dict[str, np.ndarray]]:
    return [compute_example(m, feature_config, target_config, cache_root, device) for m in rows]


def _compute_chunk_in_worker(rows, feature_config, target_config, cache_root) -> list[dict[str, np.ndarray]]:
    import torch

    torch.set_num_threads(1)  # one worker per core; nested threading only oversubscribes
    return _compute_chunk(rows, feature_config, target_config, cache_root)


def compute_frames(
    rows: Sequence[Mixture],
    feature_config,
    target_config,
    cache_root: str | os.PathLike | None,
    workers: int = 0,
    task: str = "features",
    device: str = "cpu",
) -> FrameData:
    """Features and targets of every mixture, in parallel over ``workers`` processes (0 = one per core).

    Worker processes come from joblib's loky backend, which (unlike multiprocessing's spawn) needs no
    ``if __name__ == "__main__"`` guard in the calling script, and is reused between calls. On a CUDA
    ``device`` the work runs in this process, on the GPU.
    """
    from joblib import delayed

    from speechkern.parallel import process_pool

    cache_root = None if cache_root is None else str(cache_root)
    chunk = 8
    parts = [list(rows[i : i + chunk]) for i in range(0, len(rows), chunk)]
    workers = min(workers or os.cpu_count() or 1, max(len(parts), 1))  # no idle processes started
    results: list[dict[str, np.ndarray]] = []
    if workers == 1 or len(parts) <= 1 or str(device).startswith("cuda"):
        outputs = (_compute_chunk(p, feature_config, target_config, cache_root, str(device)) for p in parts)
    else:
        parallel = process_pool(workers)
        jobs = (delayed(_compute_chunk_in_worker)(p, feature_config, target_config, cache_root) for p in parts)
        outputs = parallel(jobs)
    for j, part in enumerate(outputs):
        results.extend(part)
        report(task, min((j + 1) * chunk, len(rows)), len(rows), f"features {task}")
    lengths = [len(r["features"]) for r in results]
    for r, m in zip(results, rows, strict=True):
        if len(r["target"]) != len(r["features"]):
            raise RuntimeError(f"{m.id}: {len(r['features'])} feature frames but {len(r['target'])} target frames")
    return FrameData(
        features=np.concatenate([r["features"] for r in results]) if results else np.zeros((0, 0), np.float32),
        targets=np.concatenate([r["target"] for r in results]) if results else np.zeros((0, 0), np.float32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        mixtures=list(rows),
    )


def model_inputs(data: FrameData, stats, context: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Normalised features with the context window, for all frames or the sorted global ``rows``.

    Context is stacked within each mixture (never across two mixtures), exactly as at enhancement time.
    """
    wanted = np.arange(len(data)) if rows is None else np.asarray(rows)
    starts = data.offsets[:-1]
    owner = np.searchsorted(data.offsets, wanted, side="right") - 1
    parts = []
    for i in np.unique(owner):
        span = data.frames_of(int(i))
        local = wanted[owner == i] - starts[i]
        stacked = features.stack_context(stats.normalize(data.features[span]), context)
        parts.append(stacked[local])
    dim = features.stack_context(np.zeros((1, data.features.shape[1]), np.float32), context).shape[1]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, dim), np.float32)


def sample_rows(n_frames: int, limit: int, seed: int) -> np.ndarray:
    """Sorted random subset of ``limit`` frame indices (all frames when ``limit`` is 0 or large enough)."""
    if limit <= 0 or limit >= n_frames:
        return np.arange(n_frames)
    return np.sort(np.random.default_rng(seed).choice(n_frames, size=limit, replace=False))
