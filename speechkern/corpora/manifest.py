"""Audio listed in a CSV manifest (as ../shared/data/dev/manifest.csv): clean speech split by whole talkers.

Columns used: ``path`` (relative to the CSV's folder), ``kind`` (clean or noise), ``speaker_or_type`` (the
talker of a clean file) and ``licence``; rows whose licence contains one of ``data.exclude_licences`` are left
out. Validation and test talkers are held out whole: none of their utterances is in another split.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechkern.corpora import Utterance
from speechkern.errors import SpeechkernError

logger = logging.getLogger(__name__)

COLUMNS = ("path", "kind", "speaker_or_type", "licence")


@dataclass(frozen=True)
class Row:
    """One file of the manifest: its absolute path, kind, talker (or noise type), licence and group."""

    path: Path
    kind: str
    label: str
    licence: str
    group: str


def read_rows(manifest: str, kind: str, exclude_licences: list[str] | tuple[str, ...] = ()) -> list[Row]:
    """Rows of ``kind`` ("clean" or "noise") whose licence contains none of ``exclude_licences`` (any case)."""
    if not manifest:
        raise SpeechkernError("the manifest corpus and noise need a CSV: add the recipe override data.manifest=FILE")
    path = Path(manifest)
    if not path.is_file():
        raise SpeechkernError(f"{path}: no such manifest file (a CSV with columns {', '.join(COLUMNS)})")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SpeechkernError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
        excluded = [e.lower() for e in exclude_licences]
        rows = [
            Row(path.parent / r["path"], r["kind"], r["speaker_or_type"], r["licence"], r.get("group", ""))
            for r in reader
            if r["kind"] == kind and not any(e in r["licence"].lower() for e in excluded)
        ]
    if not rows:
        raise SpeechkernError(f"{path}: no {kind} rows left after excluding licences {list(exclude_licences)}")
    absent = [r.path for r in rows if not r.path.is_file()]
    if absent:
        raise SpeechkernError(f"{absent[0]}: listed in {path} but not there ({len(absent)} file(s) missing)")
    return rows


def splits(data, workdir: Path) -> dict[str, list[Utterance]]:
    """Utterances of each split from the clean rows of ``data.manifest``, talkers held out whole.

    Talkers are taken in a seeded random order; each goes to the test split while its utterances fit into the
    ``n_test`` still wanted, then likewise to validation (``n_val``); every other talker trains (``n_train``
    caps the training utterances, 0 = all). Talkers with many utterances therefore tend to train.
    """
    rows = read_rows(data.manifest, "clean", data.exclude_licences)
    by_talker: dict[str, list[Row]] = {}
    for r in rows:
        by_talker.setdefault(f"{r.group}/{r.label}" if r.group else r.label, []).append(r)
    talkers = sorted(by_talker)
    if len(talkers) < 3:
        raise SpeechkernError(f"{data.manifest}: {len(talkers)} talker(s); holding out talkers needs at least 3")
    order = [talkers[i] for i in np.random.default_rng(data.seed).permutation(len(talkers))]
    wanted = {"test": data.n_test, "val": data.n_val}
    out: dict[str, list[Utterance]] = {"train": [], "val": [], "test": []}
    for talker in order:
        files = by_talker[talker]
        split = next((s for s in ("test", "val") if 0 < len(files) <= wanted[s] - len(out[s])), "train")
        out[split].extend(_utterance(r, talker) for r in files)
    for split in ("val", "test"):
        if not out[split]:
            fewest = min(len(f) for f in by_talker.values())
            raise SpeechkernError(f"{data.manifest}: no talker fits into data.n_{split} = {wanted[split]} utterances "
                                  f"(the smallest talker has {fewest}); raise data.n_{split}")  # fmt: skip
    if not out["train"]:
        raise SpeechkernError(f"{data.manifest}: no talker left for training; lower data.n_val / data.n_test")
    if data.n_train:
        keep = np.sort(np.random.default_rng(data.seed + 1).permutation(len(out["train"]))[: data.n_train])
        out["train"] = [out["train"][i] for i in keep]
    for split in out:
        out[split].sort(key=lambda u: u.id)
    logger.info("%s: %s", data.manifest, ", ".join(
        f"{s} {len(u)} utterances of {len({x.talker for x in u})} talkers" for s, u in out.items()))  # fmt: skip
    return out


def _utterance(row: Row, talker: str) -> Utterance:
    uid = str(Path(row.path.parent.name) / row.path.stem).replace("/", "__")
    return Utterance(id=uid, path=str(row.path), talker=talker)


def attribution(manifest: str, exclude_licences: list[str] | tuple[str, ...] = ()) -> str:
    """Markdown naming every file a model trained on this manifest may derive from: one table per kind, with
    group, file, licence and origin (author, source id) as the manifest gives them."""
    path = Path(manifest)
    with open(path, newline="", encoding="utf-8") as handle:
        origins = {r["path"]: r.get("origin", "") for r in csv.DictReader(handle)}
    lines = []
    for kind, title in (("clean", "Speech"), ("noise", "Noise recordings")):
        rows = read_rows(manifest, kind, exclude_licences)
        lines += [f"## {title} ({len(rows)} files)", "", "| group | file | licence | origin |", "|---|---|---|---|"]
        for r in rows:
            origin = origins.get(r.path.relative_to(path.parent).as_posix(), "").replace("|", "/")
            lines.append(f"| {r.group} | {r.path.name} | {r.licence} | {origin} |")
        lines.append("")
    return "\n".join(lines)
