"""Corpora: each module lists the utterances of one kind of data, split into train, validation and test.

A corpus returns :class:`Utterance` records (an audio file and its talker); it does not mix, extract or train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechkern.errors import SpeechkernError

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
    from speechkern.corpora import demo, folder, hint, manifest, timit, voicebank

    readers = {
        "demo": demo.splits,
        "folder": folder.splits,
        "manifest": manifest.splits,
        "timit": timit.splits,
        "hint": hint.splits,
        "voicebank": voicebank.splits,
    }
    if data.corpus not in readers:  # the recipe schema allows only these; a guard for direct callers
        raise SpeechkernError(f"corpus {data.corpus!r}: expected one of {', '.join(readers)}")
    return readers[data.corpus](data, workdir)
