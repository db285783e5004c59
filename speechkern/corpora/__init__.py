"""Corpora: each module lists the utterances of one kind of data, split into train, validation and test.

A corpus returns :class:`Utterance` records (an audio file and its talker); it does not mix, extract or train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Utterance:
    """One clean utterance: ``id`` unique within the corpus, ``path`` an audio file, ``talker`` its speaker.

    Paired corpora (VoiceBank-DEMAND) also give the recorded ``noisy`` version and its ``condition``; such an
    utterance is used as recorded instead of being mixed with the recipe's noises.
    """

    id: str
    path: str
    talker: str = ""
    noisy: str = ""
    condition: str = ""


def load_splits(data, workdir: Path) -> dict[str, list[Utterance]]:
    """Utterances of each split for a recipe's ``[data]`` section; ``workdir`` holds generated audio."""
    from speechkern.corpora import demo, folder

    readers = {"demo": demo.splits, "folder": folder.splits}
    try:
        from speechkern.corpora import hint, timit, voicebank

        readers |= {"timit": timit.splits, "hint": hint.splits, "voicebank": voicebank.splits}
    except ImportError:  # pragma: no cover - corpora added later
        pass
    return readers[data.corpus](data, workdir)
