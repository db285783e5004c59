"""The embedded demo corpus: synthetic talkers from :mod:`speechkern.synth`, written once as audio files."""

from __future__ import annotations

from pathlib import Path

from speechkern import audio, synth
from speechkern.corpora import SPLITS, Utterance


def splits(data, workdir: Path) -> dict[str, list[Utterance]]:
    """Generate ``n_train``/``n_val``/``n_test`` utterances (distinct seeds per split) under ``workdir/demo``."""
    counts = {"train": data.n_train, "val": data.n_val, "test": data.n_test}
    folder = Path(workdir) / "demo"
    out: dict[str, list[Utterance]] = {}
    for index, split in enumerate(SPLITS):
        rows = []
        for utt_id, y in synth.utterances(counts[split], seed=data.seed * 1000 + index, sr=data.sr):
            path = folder / split / f"{utt_id}.wav"
            if not path.is_file():
                audio.save(path, y, data.sr, overwrite=True, subtype="FLOAT")
            rows.append(Utterance(id=f"{split}-{utt_id}", path=str(path), talker=synth.talker_of(utt_id)))
        out[split] = rows
    return out
