"""VoiceBank-DEMAND (Valentini-Botinhao et al., 2016): recorded pairs of clean and noisy speech.

Layout below ``data.voicebank_root`` (or the environment variable ``SPEECHKERN_VOICEBANK_ROOT`` /
``VOICEBANK_ROOT``), the folders in any letter case, at most two levels down (zip archives often unpack into a
folder of the same name)::

    clean_trainset_28spk_wav/p226_001.wav   noisy_trainset_28spk_wav/p226_001.wav
    clean_testset_wav/p232_001.wav          noisy_testset_wav/p232_001.wav
    logfiles/log_testset.txt                (optional: "p232_001 <noise> <snr>" per line)

The originals are 48 kHz; loading resamples them to ``data.sr``. Every utterance is used as recorded: the
noise of a pair is noisy − clean, so targets come from the pair and no noise is mixed in. Splits: the
validation split is the training-set speakers ``data.voicebank_val_speakers`` (p226 and p287, as usual), the
training split the other training-set speakers, the test split the test set. ``data.n_train``, ``n_val`` and
``n_test`` cap each split to a seeded random subset for quick runs (0: all). Test utterances listed in
``log_testset.txt`` get the condition ``<noise>_<snr>dB``; otherwise (and in training) the condition is
"voicebank". A 56-speaker training set (``*_trainset_56spk_wav``) is used when the 28-speaker one is absent.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from speechkern.corpora import Utterance
from speechkern.corpora.timit import corpus_root, seeded_subset, subfolders, survey
from speechkern.errors import SpeechkernError

logger = logging.getLogger(__name__)

VOICEBANK_ENV = ("SPEECHKERN_VOICEBANK_ROOT", "VOICEBANK_ROOT")
LAYOUT = ("clean_trainset_28spk_wav/, noisy_trainset_28spk_wav/, clean_testset_wav/ and noisy_testset_wav/ "
          "holding pNNN_MMM.wav files")  # fmt: skip
_UTTERANCE = re.compile(r"(p\d+)_\d+", re.IGNORECASE)


def _folders(root: Path) -> dict[str, Path]:
    """Folder name (lower case) → the folder of that name nearest ``root`` (≤ 2 levels) that holds WAV files."""
    found: dict[str, Path] = {}
    level = [root]
    for _ in range(3):
        nxt = []
        for folder in level:
            for sub in subfolders(folder):
                name = sub.name.lower()
                if name.endswith("_wav") and name not in found and any(_wavs(sub)):
                    found[name] = sub
                nxt.append(sub)
        level = nxt
    return found


def _wavs(folder: Path):
    return (p for p in folder.iterdir() if p.suffix.lower() == ".wav" and not p.name.startswith(".") and p.is_file())


def _pick(folders: dict[str, Path], kind: str, part: str, root: Path) -> Path:
    """The ``{kind}_{part}_wav`` folder, preferring the 28-speaker training set."""
    names = [f"{kind}_testset_wav"] if part == "test" else [f"{kind}_trainset_28spk_wav"] + sorted(
        n for n in folders if re.fullmatch(rf"{kind}_trainset_\d+spk_wav", n)
    )  # fmt: skip
    for name in names:
        if name in folders:
            return folders[name]
    listing = ", ".join(sorted(folders)) or "none"
    raise SpeechkernError(f"{root}: no VoiceBank-DEMAND {names[0]}/ found (folders of WAV files there: {listing}; "
                          f"expected {LAYOUT}); set data.voicebank_root or VOICEBANK_ROOT")  # fmt: skip


def _pairs(clean_dir: Path, noisy_dir: Path) -> list[tuple[str, Path, Path]]:
    """``(utterance id, clean file, noisy file)`` of every clean file; each must have its noisy pair."""
    clean = {p.stem: p for p in _wavs(clean_dir)}
    noisy = {p.stem: p for p in _wavs(noisy_dir)}
    missing = sorted(set(clean) - set(noisy))
    if missing:
        raise SpeechkernError(f"{noisy_dir / (missing[0] + '.wav')}: missing; every file of {clean_dir} needs its "
                              f"noisy pair ({len(missing)} missing); re-extract the corpus")  # fmt: skip
    extra = len(set(noisy) - set(clean))
    if extra:
        logger.warning("%s: %d noisy files without a clean pair are left out", noisy_dir, extra)
    return [(stem, clean[stem], noisy[stem]) for stem in sorted(clean)]


def _conditions(root: Path) -> dict[str, str]:
    """Utterance id → "<noise>_<snr>dB" from ``log_testset.txt`` when the corpus has it."""
    logs = [p for p in [*root.glob("*"), *root.glob("*/*"), *root.glob("*/*/*")]
            if p.name.lower() == "log_testset.txt" and p.is_file()]  # fmt: skip
    if not logs:
        logger.info("%s: no logfiles/log_testset.txt; test conditions are not split by noise and SNR", root)
        return {}
    out: dict[str, str] = {}
    for number, line in enumerate(logs[0].read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            snr = float(parts[2].lower().removesuffix("db"))
        except (IndexError, ValueError):
            logger.warning("%s:%d: expected '<utterance> <noise> <snr>', got %r; line skipped", logs[0], number, line)
            continue
        out[Path(parts[0]).stem] = f"{parts[1]}_{snr:g}dB"
    return out


def _speaker(stem: str) -> str:
    match = _UTTERANCE.fullmatch(stem)
    return match.group(1).lower() if match else stem.split("_")[0]


def splits(data, workdir: Path) -> dict[str, list[Utterance]]:
    """Training, validation and test pairs of VoiceBank-DEMAND (see the module docstring); ``workdir`` is unused."""
    root = corpus_root(data.voicebank_root, "voicebank_root", VOICEBANK_ENV, "VoiceBank-DEMAND", LAYOUT)
    folders = _folders(root)
    train_pairs = _pairs(_pick(folders, "clean", "train", root), _pick(folders, "noisy", "train", root))
    test_pairs = _pairs(_pick(folders, "clean", "test", root), _pick(folders, "noisy", "test", root))
    for name, pairs in (("training", train_pairs), ("test", test_pairs)):
        files = [p for _, c, n in pairs for p in (c, n)]
        found = survey(files, "VoiceBank-DEMAND", f"survey/voicebank-{name}")
        mismatched = sum(found.frames[2 * i] != found.frames[2 * i + 1] for i in range(len(pairs)))
        if mismatched:
            logger.warning("VoiceBank-DEMAND %s set: %d clean/noisy pairs differ in length; the noisy file is cut "
                           "or padded to the clean one", name, mismatched)  # fmt: skip
        logger.info("VoiceBank-DEMAND %s set at %s: %d speakers, %d pairs, %.2f h of clean speech at %s Hz", name,
                    root, len({_speaker(s) for s, _, _ in pairs}), len(pairs), found.seconds / 2 / 3600,
                    "/".join(str(r) for r in sorted(set(found.rates))))  # fmt: skip

    held_out = {s.lower() for s in data.voicebank_val_speakers}
    val = [p for p in train_pairs if _speaker(p[0]) in held_out]
    train = [p for p in train_pairs if _speaker(p[0]) not in held_out]
    if not val:
        raise SpeechkernError(f"{train_pairs[0][1].parent}: no utterances of the validation speakers "
                              f"{', '.join(sorted(held_out))}; set data.voicebank_val_speakers to training-set "
                              "speakers")  # fmt: skip
    if not train:
        raise SpeechkernError(f"{train_pairs[0][1].parent}: every speaker is a validation speaker; nothing is left "
                              "for training (check data.voicebank_val_speakers)")  # fmt: skip
    conditions = _conditions(root)

    def utterances(pairs, test: bool) -> list[Utterance]:
        return [Utterance(id=stem, path=str(clean), talker=_speaker(stem), noisy=str(noisy),
                          condition=conditions.get(stem, "voicebank") if test else "voicebank")
                for stem, clean, noisy in pairs]  # fmt: skip

    return {
        "train": utterances(seeded_subset(train, data.n_train, data.seed), False),
        "val": utterances(seeded_subset(val, data.n_val, data.seed + 1), False),
        "test": utterances(seeded_subset(test_pairs, data.n_test, data.seed + 2), True),
    }
