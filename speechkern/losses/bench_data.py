"""Data sets of the losses bench and their evaluation protocols: provided train/test files, folds, or re-splits.

Formats are documented in docs/losses.md; :func:`load_data_dir` finds every set of a folder tree.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import datasets as sk_datasets

from speechkern.errors import SpeechkernError
from speechkern.losses.names import BUILTIN_DATASETS

# file names of a provided split, per role; a set's files are <stem><suffix> or, inside a set's own folder, <role>.csv
_ROLE_SUFFIXES = {
    "train": ("_train", "-train", ".train"),
    "test": ("_test", "-test", ".test"),
    "validation": ("_validation", "_val", "-validation", "-val", ".validation", ".val"),
}
_FOLD_FILE_SUFFIXES = ("_folds.csv", ".folds", "_folds.txt", "_fold.csv")
SPLITS_FILE_SUFFIX = "_splits.json"
# The largest feature magnitude: standardising squares the values in float64 (1e154² overflows), and a set of
# 1e300s trained to NaN outputs, refused only after every network of the first split was trained.
MAX_FEATURE = 1e150


@dataclass(frozen=True)
class Split:
    """One evaluation of a protocol: row indices of the train, test and (optional) validation parts."""

    name: str
    train: np.ndarray
    test: np.ndarray
    validation: np.ndarray | None = None


@dataclass(frozen=True)
class Dataset:
    """A classification data set: features ``(n, d)`` (float64), labels ``(n,)`` in ``0..C−1``, class names.

    splits: the protocol the files provide (a train/test split, folds or index lists), or None: re-split per
    seed. protocol: a short description of how the set is evaluated. selection: a provided split (train and
    validation parts) on which the ``"budget"`` selection rule chooses its epochs, or None.
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    splits: tuple[Split, ...] | None = None
    protocol: str = "random stratified split per seed"
    selection: Split | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """A hash of the content (features, labels, class names, provided splits), not of where it was read."""
        digest = hashlib.sha256()
        digest.update(repr((self.features.shape, self.class_names)).encode())
        digest.update(np.ascontiguousarray(self.features, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        for split in (*(self.splits or ()), *((self.selection,) if self.selection else ())):
            digest.update(split.name.encode())
            for part in (split.train, split.test, split.validation):
                digest.update(b"|" if part is None else b"|" + np.asarray(part, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint(),
            "n_samples": int(self.features.shape[0]),
            "n_features": int(self.features.shape[1]),
            "n_classes": self.n_classes,
            "n_splits": len(self.splits) if self.splits else 1,
            "protocol": self.protocol,
        }


# ------------------------------------------------------------------------------------------------- built-in sets


def two_spirals(n_per_class: int = 400, noise: float = 0.8, turns: float = 1.75, seed: int = 0) -> Dataset:
    """Two interleaved spirals in the plane, a non-linear two-class problem.

    Points lie at angle θ (uniform in radius, up to ``turns`` revolutions) and radius θ; the second class is the
    first rotated by π. ``noise``: standard deviation of the Gaussian jitter, in the units of the radius.
    """
    rng = np.random.default_rng(seed)
    theta = np.sqrt(rng.uniform(0.02, 1.0, size=n_per_class)) * turns * 2 * np.pi
    arm = np.stack([theta * np.cos(theta), theta * np.sin(theta)], axis=1)
    points = np.concatenate([arm, -arm]) + rng.normal(scale=noise, size=(2 * n_per_class, 2))
    labels = np.repeat(np.arange(2), n_per_class)
    return Dataset("two_spirals", points, labels, ("arm 0", "arm 1"), f"generated: two spirals, {turns} turns")


def _from_sklearn(name: str, loader: Callable[..., Any]) -> Dataset:
    bunch = loader()
    names = tuple(str(n) for n in getattr(bunch, "target_names", np.unique(bunch.target)))
    return Dataset(
        name,
        np.asarray(bunch.data, dtype=np.float64),
        np.asarray(bunch.target, dtype=np.int64),
        names,
        f"scikit-learn load_{name}",
    )


def builtin_dataset(name: str) -> Dataset:
    """One of :data:`BUILTIN_DATASETS` (bundled with scikit-learn or generated; nothing is downloaded)."""
    loaders = {
        "digits": sk_datasets.load_digits,
        "wine": sk_datasets.load_wine,
        "breast_cancer": sk_datasets.load_breast_cancer,
        "iris": sk_datasets.load_iris,
    }
    if name == "two_spirals":
        return two_spirals()
    if name not in loaders:
        raise SpeechkernError(f"unknown built-in dataset {name!r}; choose from {', '.join(BUILTIN_DATASETS)}")
    return _from_sklearn(name, loaders[name])


# ----------------------------------------------------------------------------------------------------- CSV files


@dataclass
class _Table:
    """The rows of one CSV file: features, text labels and the optional ``fold`` / ``split`` columns."""

    path: Path
    features: list[list[float]]
    labels: list[str]
    folds: list[str] | None
    roles: list[str] | None
    n_features: int
    feature_names: tuple[str, ...] = ()


def _read_table(path: Path) -> _Table:
    """Parse a CSV file: a header row, a ``label`` column, optional ``fold`` and ``split`` columns, numeric rest."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise SpeechkernError(f"{path}: cannot read the file ({err}); give a UTF-8 CSV file") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise SpeechkernError(f"{path}: the file is empty; give a header row and one row per sample")
    header = [cell.strip().lower() for cell in rows[0]]
    if "label" not in header:
        raise SpeechkernError(
            f"{path}: the header needs a 'label' column (the class of each row), got {rows[0]!r}; see docs/losses.md"
        )
    for name in ("label", "fold", "split"):  # a second one was read as a feature: the label leaked into the inputs
        if header.count(name) > 1:
            columns = ", ".join(str(i + 1) for i, cell in enumerate(header) if cell == name)
            raise SpeechkernError(f"{path}: the header names {header.count(name)} {name!r} columns (columns "
                                  f"{columns}); keep one, or rename the others")  # fmt: skip
    label_col = header.index("label")
    fold_col = header.index("fold") if "fold" in header else None
    role_col = header.index("split") if "split" in header else None
    feature_cols = [i for i in range(len(header)) if i not in (label_col, fold_col, role_col)]
    if not feature_cols:
        raise SpeechkernError(f"{path}: no feature column besides 'label'; give at least one numeric column")
    table = _Table(path, [], [], [] if fold_col is not None else None, [] if role_col is not None else None, 0)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise SpeechkernError(f"{path}, row {line}: {len(row)} fields, expected {len(header)} as in the header")
        try:
            values = [float(row[i]) for i in feature_cols]
        except ValueError:
            bad = next(row[i] for i in feature_cols if not _is_float(row[i]))
            raise SpeechkernError(
                f"{path}, row {line}: feature value {bad!r} is not a number; every column but 'label', 'fold' and "
                "'split' must be numeric"
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise SpeechkernError(f"{path}, row {line}: features must be finite (no NaN or inf)")
        if any(abs(v) > MAX_FEATURE for v in values):  # standardising squares it: inf, NaN outputs, after training
            big = next(row[i].strip() for i, v in zip(feature_cols, values, strict=True) if abs(v) > MAX_FEATURE)
            raise SpeechkernError(f"{path}, row {line}: feature value {big} is too large to standardise (its square "
                                  "overflows); rescale that column so that its values stay within "
                                  f"±{MAX_FEATURE:g}")  # fmt: skip
        label = row[label_col].strip()
        if not label:
            raise SpeechkernError(f"{path}, row {line}: the label is empty")
        table.features.append(values)
        table.labels.append(label)
        if table.folds is not None:
            table.folds.append(row[fold_col].strip())  # type: ignore[index]
        if table.roles is not None:
            table.roles.append(_role(row[role_col], path, line))  # type: ignore[index]
    table.n_features = len(feature_cols)
    table.feature_names = tuple(header[i] for i in feature_cols)
    return table


def _role(cell: str, path: Path, line: int) -> str:
    value = cell.strip().lower()
    aliases = {"train": "train", "test": "test", "validation": "validation", "val": "validation", "valid": "validation"}
    if value not in aliases:
        raise SpeechkernError(f"{path}, row {line}: split {cell!r} is not one of train, test, validation (or val)")
    return aliases[value]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _natural_key(text: str) -> tuple:
    """Sorts integer names numerically (2 before 10) and before other names, which sort as text."""
    return (0, int(text), text) if _is_int(text) else (1, 0, text)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _classes(labels: Sequence[str], where: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Sorted class names (numerically when all are integers) and the label index of each row."""
    class_names = tuple(sorted(set(labels), key=_natural_key))
    if len(class_names) < 2:
        raise SpeechkernError(f"{where}: {len(class_names)} class found; a classification dataset needs at least 2")
    index = {name: i for i, name in enumerate(class_names)}
    return class_names, np.array([index[label] for label in labels], dtype=np.int64)


def _check_counts(y: np.ndarray, class_names: tuple[str, ...], where: str) -> None:
    counts = np.bincount(y, minlength=len(class_names))
    if counts.min() < 2:
        rare = class_names[int(counts.argmin())]
        raise SpeechkernError(f"{where}: class {rare!r} has {counts.min()} row; every class needs at least 2")


def _fold_splits(folds: Sequence[str], where: str) -> tuple[Split, ...]:
    """One split per fold value: that fold is the test part, the others the train part."""
    values = sorted(set(folds), key=_natural_key)
    if len(values) < 2:
        raise SpeechkernError(f"{where}: the fold column holds {len(values)} distinct value; give at least 2 folds")
    folds_arr = np.asarray(folds)
    return tuple(
        Split(f"fold {v}", np.flatnonzero(folds_arr != v), np.flatnonzero(folds_arr == v), None) for v in values
    )


def _role_split(roles: Sequence[str], where: str) -> Split:
    roles_arr = np.asarray(roles)
    parts = {role: np.flatnonzero(roles_arr == role) for role in ("train", "test", "validation")}
    for role in ("train", "test"):
        if parts[role].size == 0:
            raise SpeechkernError(f"{where}: the split column names no {role!r} row; give train and test rows")
    validation = parts["validation"] if parts["validation"].size else None
    return Split("provided split", parts["train"], parts["test"], validation)


def _read_fold_file(path: Path, n_rows: int) -> list[str]:
    """A fold file: one fold value per data row (an optional header line ``fold``)."""
    try:
        lines = [line.strip().split(",")[0] for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise SpeechkernError(f"{path}: cannot read the fold file ({err})") from None
    lines = [line for line in lines if line]
    if lines and lines[0].lower() == "fold":
        lines = lines[1:]
    if len(lines) != n_rows:
        raise SpeechkernError(
            f"{path}: {len(lines)} fold values for {n_rows} data rows; give one fold value per row of the data file"
        )
    return lines


def _index_part(value: Any, n_rows: int, where: str) -> np.ndarray:
    """A list of distinct 0-based row indices below ``n_rows``."""
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise SpeechkernError(f"{where}: expected a list of integer row indices (0-based), got {str(value)[:60]}")
    rows = np.asarray(value, dtype=np.int64)
    bad = rows[(rows < 0) | (rows >= n_rows)]
    if bad.size:
        raise SpeechkernError(f"{where}: row index {bad[0]} is outside 0..{n_rows - 1} (the data file's rows)")
    if np.unique(rows).size != rows.size:
        raise SpeechkernError(f"{where}: a row index appears twice; list each row once")
    return rows


def _index_split(entry: Any, name: str, n_rows: int, where: str, roles: tuple[str, ...]) -> Split:
    """One split of a splits file: ``roles`` required (train with test or validation), the rest optional."""
    if not isinstance(entry, dict):
        raise SpeechkernError(f"{where}: expected an object with 'train' and '{roles[1]}' index lists")
    unknown = sorted(set(entry) - {"name", "train", "test", "validation"})
    if unknown:
        raise SpeechkernError(f"{where}: unknown key(s) {', '.join(unknown)}; use name, train, test, validation")
    for role in roles:
        if not entry.get(role):
            raise SpeechkernError(f"{where}: the '{role}' index list is missing or empty")
    parts = {
        r: _index_part(entry[r], n_rows, f"{where}, {r}") if r in entry else None
        for r in ("train", "test", "validation")
    }
    present = [r for r, rows in parts.items() if rows is not None]
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            common = np.intersect1d(parts[a], parts[b])
            if common.size:
                raise SpeechkernError(f"{where}: row {common[0]} is in both {a} and {b}; the parts must not overlap")
    test = parts["test"] if parts["test"] is not None else np.empty(0, dtype=np.int64)
    validation = parts["validation"] if parts["validation"] is not None and parts["validation"].size else None
    return Split(str(entry.get("name", name)), parts["train"], test, validation)  # type: ignore[arg-type]


def load_index_splits(path: Path, n_rows: int) -> tuple[tuple[Split, ...], Split | None]:
    """Provided splits as explicit row-index lists (a JSON file; format and example in docs/losses.md).

    ``{"splits": [{"name": ..., "train": [...], "test": [...], "validation": [...]}, ...], "selection":
    {"train": [...], "validation": [...]}}``: indices are 0-based data rows of the set's CSV file (the header
    not counted); ``name``, ``validation`` and ``selection`` are optional. Splits may overlap one another (a row
    in several test parts, or in none); within a split the parts must not. Returns (splits, selection split).
    Raises SpeechkernError naming the file and the split for anything else.
    """
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SpeechkernError(f"{path}: cannot read the splits file ({err}); give JSON as in docs/losses.md") from None
    if isinstance(content, list):
        content = {"splits": content}
    if not isinstance(content, dict) or not isinstance(content.get("splits"), list) or not content["splits"]:
        raise SpeechkernError(f"{path}: expected an object with a non-empty 'splits' list (see docs/losses.md)")
    splits = tuple(
        _index_split(entry, f"split {k + 1}", n_rows, f"{path}, split {k + 1}", ("train", "test"))
        for k, entry in enumerate(content["splits"])
    )
    names = [s.name for s in splits]
    if len(set(names)) != len(names):
        raise SpeechkernError(f"{path}: split names {names} repeat; give each split its own name")
    selection = None
    if content.get("selection") is not None:
        where = f"{path}, selection"
        selection = _index_split(content["selection"], "selection", n_rows, where, ("train", "validation"))
    return splits, selection


def load_csv_dataset(
    path: str | os.PathLike, name: str | None = None, fold_file: Path | None = None, splits_file: Path | None = None
) -> Dataset:
    """Read a dataset from one CSV file (UTF-8, comma-separated); see docs/losses.md for the format.

    A header row; a ``label`` column (the class of each row: any text or number; classes are sorted, numerically
    when all are integers); every other column numeric, except the optional protocol columns ``fold`` (k-fold
    evaluation: each fold value is the test part once) and ``split`` (``train``/``test``/``validation`` per row).
    ``fold_file``: a file with one fold value per row, used when the CSV has no fold column. ``splits_file``:
    explicit row-index lists (:func:`load_index_splits`), used when the CSV has neither column. Each class needs
    at least 2 rows. The dataset is named ``name``, by default after the file's stem.
    """
    path = Path(path)
    table = _read_table(path)
    class_names, y = _classes(table.labels, str(path))
    _check_counts(y, class_names, str(path))
    folds = table.folds
    source = str(path.resolve())
    if folds is None and fold_file is not None:
        folds = _read_fold_file(fold_file, len(y))
        source = f"{source} (folds: {fold_file.resolve()})"
    if folds is not None and table.roles is not None:
        raise SpeechkernError(f"{path}: give either a 'fold' or a 'split' column (or fold file), not both")
    splits: tuple[Split, ...] | None = None
    selection: Split | None = None
    protocol = "random stratified split per seed"
    if splits_file is not None:
        if folds is not None or table.roles is not None:
            raise SpeechkernError(
                f"{path}: give the protocol once, as a splits file ({splits_file.name}) or as a 'fold'/'split' "
                "column or fold file, not both"
            )
        splits, selection = load_index_splits(splits_file, len(y))
        source = f"{source} (splits: {splits_file.resolve()})"
        protocol = f"{len(splits)} provided split{'s' if len(splits) > 1 else ''} (index lists)"
    elif folds is not None:
        splits = _fold_splits(folds, str(path))
        protocol = f"{len(splits)} provided folds"
    elif table.roles is not None:
        splits = (_role_split(table.roles, str(path)),)
        protocol = "provided train/test split"
    features = np.asarray(table.features, dtype=np.float64)
    return Dataset(name or _safe(path.stem), features, y, class_names, source, splits, protocol, selection)


def load_split_files(name: str, train: Path, test: Path, validation: Path | None = None) -> Dataset:
    """A dataset given as separate train, test (and optional validation) CSV files of the same columns."""
    paths = [p for p in (train, test, validation) if p is not None]
    tables = [_read_table(p) for p in paths]
    widths = {t.n_features for t in tables}
    if len(widths) != 1:
        raise SpeechkernError(
            f"{', '.join(map(str, paths))}: the files have different numbers of feature columns "
            f"({', '.join(str(t.n_features) for t in tables)}); give the same columns in each"
        )
    first = tables[0]
    for other in tables[1:]:  # columns are matched by position: swapped ones fed one feature as another
        if other.feature_names != first.feature_names:
            pairs = zip(first.feature_names, other.feature_names, strict=True)  # the same count: checked above
            at = next(i for i, (a, b) in enumerate(pairs) if a != b)
            raise SpeechkernError(
                f"{first.path}, {other.path}: the feature columns differ (column {at + 1} of the features is "
                f"{first.feature_names[at]!r} in the first, {other.feature_names[at]!r} in the second); give the "
                "same columns in the same order in each"
            )
    labels = [label for t in tables for label in t.labels]
    class_names, y = _classes(labels, str(train))
    sizes = np.cumsum([0] + [len(t.labels) for t in tables])
    parts = [np.arange(sizes[i], sizes[i + 1]) for i in range(len(tables))]
    _check_counts(y[parts[0]], class_names, f"{train} (train part)")
    split = Split("provided split", parts[0], parts[1], parts[2] if validation is not None else None)
    features = np.asarray([row for t in tables for row in t.features], dtype=np.float64)
    roles = "train/validation/test" if validation is not None else "train/test"
    source = ", ".join(str(p.resolve()) for p in paths)
    return Dataset(name, features, y, class_names, source, (split,), f"provided {roles} files")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _role_of(stem: str) -> tuple[str, str] | None:
    """(set stem, role) when a file stem names a part of a provided split, e.g. ``adult_train`` → (adult, train)."""
    low = stem.lower()
    if low in _ROLE_SUFFIXES or low in ("val", "valid"):
        return "", "validation" if low in ("val", "valid", "validation") else low
    for role, suffixes in _ROLE_SUFFIXES.items():
        for suffix in suffixes:
            if low.endswith(suffix) and len(stem) > len(suffix):
                return stem[: -len(suffix)], role
    return None


def _skipped(folder: Path, root: Path) -> bool:
    """Hidden folders and bench output folders (holding ``bench.json``), with everything below them."""
    rel = folder.relative_to(root)
    chain = [root / Path(*rel.parts[: i + 1]) for i in range(len(rel.parts))]
    return any(p.name.startswith(".") or (p / "bench.json").is_file() for p in chain)


def load_data_dir(directory: str | os.PathLike) -> list[Dataset]:
    """Every dataset in a folder tree, in name order; names are qualified by their sub-folder (``uci/iris``).

    Per folder: ``<set>_train.csv`` + ``<set>_test.csv`` (+ ``<set>_validation.csv``) form one set with a
    provided split, as do ``train.csv`` + ``test.csv`` in a folder of their own (named after the folder);
    any other ``<set>.csv`` is one set (with a ``fold``/``split`` column or a ``<set>_folds.csv`` fold file for
    provided folds, a ``<set>_splits.json`` file of row-index lists for provided splits, else re-split per
    seed). Hidden folders and bench output folders are skipped.
    docs/losses.md gives the formats.
    """
    root = Path(directory)
    if not root.is_dir():
        raise SpeechkernError(f"{root}: not a folder; give a folder holding one CSV file per dataset")
    found: list[Dataset] = []
    folders = sorted({p.parent for p in root.rglob("*.csv")})
    for folder in (f for f in folders if not _skipped(f, root)):
        rel = folder.relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        files = sorted(p for p in folder.glob("*.csv") if not p.name.startswith("."))
        fold_files = {p for p in files if p.name.lower().endswith(_FOLD_FILE_SUFFIXES)}
        groups: dict[str, dict[str, Path]] = {}
        singles: list[Path] = []
        for p in files:
            if p in fold_files:
                continue
            role = _role_of(p.stem)
            if role is None:
                singles.append(p)
            else:
                groups.setdefault(role[0], {})[role[1]] = p
        for stem, parts in sorted(groups.items()):
            if "train" not in parts or "test" not in parts:
                missing = "test" if "train" in parts else "train"
                where = ", ".join(str(p) for p in parts.values())
                raise SpeechkernError(f"{where}: found no matching {missing} file; give both train and test files")
            name = _safe(stem) if stem else (_safe(folder.name) if rel != "." else _safe(root.name))
            qualified = prefix + name if stem else (rel if rel != "." else name)
            found.append(load_split_files(qualified, parts["train"], parts["test"], parts.get("validation")))
        for p in singles:
            fold_file = next(
                (folder / f"{p.stem}{s}" for s in _FOLD_FILE_SUFFIXES if (folder / f"{p.stem}{s}").is_file()), None
            )
            splits_file = folder / f"{p.stem}{SPLITS_FILE_SUFFIX}"
            found.append(
                load_csv_dataset(p, prefix + _safe(p.stem), fold_file, splits_file if splits_file.is_file() else None)
            )
    if not found:
        raise SpeechkernError(f"{root}: no *.csv files found; put one CSV file per dataset there (see docs/losses.md)")
    names = [d.name for d in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpeechkernError(f"{root}: dataset name(s) {', '.join(duplicates)} found twice; rename the files")
    return sorted(found, key=lambda d: d.name)


def select_datasets(
    data_dir: str | os.PathLike | None = None, only: Sequence[str] | None = None, builtin: bool = False
) -> list[Dataset]:
    """The sets of ``data_dir`` (plus the built-in ones when ``builtin``), restricted to the names in ``only``.

    A built-in set named in ``only`` is run even without ``builtin``. Raises SpeechkernError when nothing is
    selected, a name is unknown, or a name is used twice.
    """
    extra = load_data_dir(data_dir) if data_dir is not None else []
    wanted = list(dict.fromkeys(only)) if only else None
    if data_dir is None and not builtin and not wanted:
        raise SpeechkernError(
            "no datasets chosen; give data_dir=DIR (a folder of CSV sets), builtin=True, or only=[NAME]"
        )
    by_name = {d.name: d for d in extra}
    builtins = [n for n in BUILTIN_DATASETS if builtin or (wanted and n in wanted)]
    clash = sorted(set(builtins) & set(by_name))
    if clash:
        raise SpeechkernError(
            f"dataset name(s) {', '.join(clash)} used twice (built-in and in {data_dir}); rename the CSV file(s)"
        )
    names = [d.name for d in extra] + builtins
    if wanted is None:
        wanted = names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        available = ", ".join(list(by_name) + list(BUILTIN_DATASETS))
        raise SpeechkernError(f"unknown dataset(s) {', '.join(unknown)}; available: {available}")
    return [by_name[n] if n in by_name else builtin_dataset(n) for n in wanted]
