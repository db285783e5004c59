"""Neural-collapse measures on last-layer features (SPEC §10).

Conventions shared by every function here:

* ``H`` is a ``(n_samples, n_features)`` array of features (any float dtype; all sums are accumulated in float64)
  and ``y`` a length-``n_samples`` array of class labels (integers, strings, ...).
* The classes of an array ``H, y`` are the sorted unique labels of ``y``; "class ``k``" is the ``k``-th of them.
  Row ``k`` of a classifier matrix ``W`` (``(n_classes, n_features)``) and entry ``k`` of its bias ``b`` belong to
  that class. With the usual labels ``0 .. C-1`` (all present) row ``k`` is simply label ``k``.
* ``means`` (reference class means) may be given as

  - ``None``: the class means of ``H`` itself;
  - a mapping ``{label: mean vector}``;
  - an array of shape ``(C, n_features)`` whose row ``label`` is the mean of that label (integer labels
    ``0 .. C-1`` only; use a mapping for other labels).

  The denominator of the variance ratios is the variance of *all* the reference means about their own mean
  (the mean of class means, not the sample-weighted global mean), so test features can be normalised by train
  means even when a test set lacks a class.

The variance measures are dimensionless ratios of squared Euclidean distances (units of the features cancel):

    Variance = E_x ‖h(x) − μ_{y(x)}‖²  /  E_i ‖μ_i − μ̄‖²,   μ̄ = mean of the class means.

A ratio with a zero denominator is ``inf`` (or ``nan`` when the numerator is zero too).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from speechkern.errors import SpeechkernError

__all__ = [
    "ClassStats",
    "FeatureStats",
    "NCMetrics",
    "NearestCentreStats",
    "class_stats",
    "kmeans_centers",
    "nc_metrics",
    "stack_stats",
    "strong_test_variance",
    "train_variance",
    "weak_test_variance",
]

Means = Mapping[Hashable, ArrayLike] | ArrayLike | None

# Rows per chunk when distances to centres are formed explicitly: keeps the (rows, k, d) difference tensor near
# 2**22 float64 values (32 MiB) whatever the feature size.
_CHUNK_VALUES = 2**22


# ----------------------------------------------------------------------------------------------------------------
# Validation helpers


def _features(H: ArrayLike, name: str = "H") -> NDArray[np.floating]:
    """H as a 2-D floating array (no copy when it already is one)."""
    arr = np.asarray(H)
    if arr.ndim != 2:
        raise SpeechkernError(
            f"{name} must be a 2-D array (samples × features); got shape {arr.shape}. "
            "Flatten each sample's features into one row."
        )
    if arr.shape[0] == 0:
        raise SpeechkernError(f"{name} has no rows; pass at least one sample.")
    if not np.issubdtype(arr.dtype, np.floating):
        if arr.dtype.kind not in "biu":  # complex would lose its imaginary part, strings and objects fail in numpy
            raise SpeechkernError(f"{name} must hold real numbers; got dtype {arr.dtype}. Pass the features as floats.")
        arr = arr.astype(np.float64)
    return arr


def _labels(y: ArrayLike, n: int, name: str = "y") -> NDArray[Any]:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise SpeechkernError(f"{name} must be a 1-D array of {n} labels (one per row of H); got shape {arr.shape}.")
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):  # NaN is no class: NaN != NaN splits it per row
        raise SpeechkernError(f"{name} holds NaN or infinite labels; give every sample its class.")
    return arr


def _check_finite(arr: NDArray[Any], name: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise SpeechkernError(f"{name} contains NaN or infinite values; check the model's features.")


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return float(num / den)
    return float("nan") if num == 0 else float("inf")


# ----------------------------------------------------------------------------------------------------------------
# Sufficient statistics


@dataclass(frozen=True)
class ClassStats:
    """Per-class sufficient statistics of a feature set (all float64).

    classes: ``(C,)`` labels; counts: ``(C,)`` samples per class; means: ``(C, d)`` class means (NaN rows for
    classes without samples); scatter: ``(C,)`` within-class sums ``Σ_{x∈c} ‖h(x) − μ_c‖²``; within: the
    ``(d, d)`` within-class scatter matrix ``Σ_x (h(x) − μ_y)(h(x) − μ_y)ᵀ`` summed over all samples, or None when
    it was not tracked.
    """

    classes: NDArray[Any]
    counts: NDArray[np.int64]
    means: NDArray[np.float64]
    scatter: NDArray[np.float64]
    within: NDArray[np.float64] | None

    @property
    def n_samples(self) -> int:
        return int(self.counts.sum())

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])

    def present(self) -> ClassStats:
        """The statistics restricted to the classes that have samples."""
        keep = self.counts > 0
        if keep.all():
            return self
        return ClassStats(self.classes[keep], self.counts[keep], self.means[keep], self.scatter[keep], self.within)


def class_stats(H: ArrayLike, y: ArrayLike, *, covariance: bool = True) -> ClassStats:
    """Class counts, means and within-class scatter of ``H`` (two passes per class, float64).

    ``covariance=False`` skips the ``(d, d)`` within-class scatter matrix (needed only for NC1).
    """
    H = _features(H)
    y = _labels(y, H.shape[0])
    _check_finite(H, "H")
    classes, inverse = np.unique(y, return_inverse=True)
    d = H.shape[1]
    counts = np.bincount(inverse, minlength=len(classes)).astype(np.int64)
    means = np.empty((len(classes), d))
    scatter = np.empty(len(classes))
    within = np.zeros((d, d)) if covariance else None
    for k in range(len(classes)):
        block = H[inverse == k].astype(np.float64)
        means[k] = block.mean(axis=0)
        block -= means[k]  # centre first: the second pass avoids the cancellation of Σh² − nμ²
        scatter[k] = np.einsum("ij,ij->", block, block)
        if within is not None:
            within += block.T @ block
    return ClassStats(classes, counts, means, scatter, within)


class FeatureStats:
    """Streaming, mergeable float64 sufficient statistics of labelled features.

    Feed batches with :meth:`update` (or combine two accumulators with :meth:`merge`); the measures computed from
    it equal those of the array functions on all the batches stacked together. Memory is ``O(C·d + d²)``
    whatever the number of samples (``O(C·d)`` with ``covariance=False``, which disables NC1).

    Batches are merged with Chan et al.'s pairwise update of means and centred scatter, so no raw sums of
    squares (prone to cancellation when features sit far from the origin) are ever formed.

    classes: the labels in the order that defines class ``k`` (row ``k`` of ``W``); by default the sorted labels
    seen. Labels outside a given ``classes`` are rejected.
    """

    def __init__(self, classes: Sequence[Hashable] | NDArray[Any] | None = None, *, covariance: bool = True) -> None:
        self.covariance = covariance
        self._fixed = classes is not None
        self._slot: dict[Hashable, int] = {}
        self._labels: list[Hashable] = []
        self._counts = np.zeros(0, dtype=np.int64)
        self._means: NDArray[np.float64] | None = None
        self._scatter = np.zeros(0)
        self._within: NDArray[np.float64] | None = None
        if classes is not None:
            labels = list(np.asarray(classes).tolist())
            if len(set(labels)) != len(labels):
                raise SpeechkernError(f"classes must be distinct labels; got {labels}.")
            for label in labels:
                self._add_class(label)

    # -- accumulation --------------------------------------------------------------------------------------------

    def _add_class(self, label: Hashable) -> int:
        self._slot[label] = len(self._labels)
        self._labels.append(label)
        self._counts = np.append(self._counts, 0)
        self._scatter = np.append(self._scatter, 0.0)
        if self._means is not None:
            self._means = np.vstack([self._means, np.zeros((1, self._means.shape[1]))])
        return self._slot[label]

    def _init_dim(self, d: int) -> None:
        if self._means is None:
            self._means = np.zeros((len(self._labels), d))
            self._within = np.zeros((d, d)) if self.covariance else None
        elif self._means.shape[1] != d:
            raise SpeechkernError(
                f"batch has {d} features but earlier batches had {self._means.shape[1]}; "
                "capture the same layer for every batch."
            )

    def update(self, H: ArrayLike, y: ArrayLike) -> FeatureStats:
        """Add a batch of features ``H`` ``(n, d)`` with labels ``y`` ``(n,)``; returns self."""
        H = _features(H)
        y = _labels(y, H.shape[0])
        _check_finite(H, "H")
        self._init_dim(H.shape[1])
        batch_classes, inverse = np.unique(y, return_inverse=True)
        slots = []
        for label in batch_classes.tolist():
            if label not in self._slot:
                if self._fixed:
                    raise SpeechkernError(
                        f"label {label!r} is not one of the declared classes {self._labels}; "
                        "declare every class or leave classes unset."
                    )
                self._add_class(label)
            slots.append(self._slot[label])
        residuals = np.empty(H.shape, dtype=np.float64) if self._within is not None else None
        for k, slot in enumerate(slots):
            rows = inverse == k
            block = H[rows].astype(np.float64)
            n_b = block.shape[0]
            mean_b = block.mean(axis=0)
            block -= mean_b
            scatter_b = np.einsum("ij,ij->", block, block)
            if residuals is not None:
                residuals[rows] = block
            self._merge_class(slot, n_b, mean_b, scatter_b)
        if residuals is not None and self._within is not None:
            self._within += residuals.T @ residuals  # one GEMM for all classes of the batch
        return self

    def _merge_class(self, slot: int, n_b: int, mean_b: NDArray[np.float64], scatter_b: float) -> None:
        """Chan et al.'s pairwise merge of ``n_b`` samples (mean, centred scatter) into class ``slot``."""
        assert self._means is not None
        n_a = int(self._counts[slot])
        n = n_a + n_b
        delta = mean_b - self._means[slot]
        weight = n_a * n_b / n
        self._means[slot] += delta * (n_b / n)
        self._scatter[slot] += scatter_b + weight * float(delta @ delta)
        if self._within is not None and n_a > 0:
            self._within += weight * np.outer(delta, delta)
        self._counts[slot] = n

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add the statistics of another accumulator (e.g. from another worker); returns self."""
        if other._means is None:
            return self
        self._init_dim(other._means.shape[1])
        if self._within is not None and other._within is None:
            raise SpeechkernError("cannot merge statistics without covariance into ones that track it.")
        seen = [label for label, slot_o in other._slot.items() if other._counts[slot_o] > 0]
        strangers = [label for label in seen if label not in self._slot]
        if self._fixed and strangers:  # checked before any change, so a refused merge leaves self intact
            raise SpeechkernError(f"labels {strangers} are not among the declared classes {self._labels}.")
        for label in seen:
            slot_o = other._slot[label]
            if label not in self._slot:
                self._add_class(label)
            self._merge_class(
                self._slot[label],
                int(other._counts[slot_o]),
                other._means[slot_o],
                float(other._scatter[slot_o]),
            )
        if self._within is not None and other._within is not None:
            self._within += other._within
        return self

    # -- results ------------------------------------------------------------------------------------------------

    @property
    def n_samples(self) -> int:
        return int(self._counts.sum())

    def stats(self) -> ClassStats:
        """The accumulated statistics, classes in their defining order (see the class docstring)."""
        if self._means is None:
            raise SpeechkernError("no features were accumulated yet; call update() with at least one batch.")
        labels = self._labels
        if self._fixed:
            order = np.arange(len(labels))
        else:
            try:
                order = np.asarray(sorted(range(len(labels)), key=lambda i: labels[i]), dtype=np.int64)
            except TypeError as err:
                raise SpeechkernError(f"labels of mixed types cannot be ordered: {labels}") from err
        means = self._means[order].copy()
        means[self._counts[order] == 0] = np.nan
        return ClassStats(
            classes=np.asarray([labels[i] for i in order]),
            counts=self._counts[order].copy(),
            means=means,
            scatter=self._scatter[order].copy(),
            within=None if self._within is None else self._within.copy(),
        )

    @property
    def classes(self) -> NDArray[Any]:
        return self.stats().classes

    @property
    def means(self) -> NDArray[np.float64]:
        """``(C, d)`` class means (NaN rows for declared classes without samples)."""
        return self.stats().means

    def train_variance(self, means: Means = None) -> float:
        """:func:`train_variance` of all accumulated features."""
        return _variance_from_stats(self.stats(), means)

    def strong_test_variance(self, means: Means = None) -> float:
        """:func:`strong_test_variance` of all accumulated features."""
        return _variance_from_stats(self.stats(), means)

    def nc_metrics(
        self,
        W: ArrayLike | None = None,
        b: ArrayLike | None = None,
        *,
        agreement: float | None = None,
    ) -> NCMetrics:
        """:func:`nc_metrics` of all accumulated features.

        NC4 needs a second pass over the features once the class means are known: run a
        :class:`NearestCentreStats` with ``centers=self.means`` and the same ``W, b`` and pass its
        :attr:`~NearestCentreStats.agreement` here; without it NC4 is reported as None.
        """
        return _nc_from_stats(self.stats(), W, b, agreement)


# ----------------------------------------------------------------------------------------------------------------
# Variances


def _reference_means(stats: ClassStats, means: Means) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(mean of each class of ``stats``, all reference means) for the variance ratio."""
    d = stats.n_features
    if means is None:
        return stats.means, stats.means
    if isinstance(means, Mapping):
        missing = [c for c in stats.classes.tolist() if c not in means]
        if missing:
            raise SpeechkernError(f"means has no entry for label(s) {missing}; give a mean for every class in y.")
        ref = np.asarray([np.asarray(v, dtype=np.float64) for v in means.values()], dtype=np.float64)
        per_class = np.asarray([np.asarray(means[c], dtype=np.float64) for c in stats.classes.tolist()])
    else:
        ref = np.asarray(means, dtype=np.float64)
        if ref.ndim != 2:
            raise SpeechkernError(f"means must be a (n_classes, n_features) array or a mapping; got shape {ref.shape}.")
        if not np.issubdtype(stats.classes.dtype, np.integer):
            raise SpeechkernError(
                f"an array of means is indexed by integer labels, but the labels are {stats.classes.dtype} "
                f"({stats.classes[:5].tolist()}...); pass means as a mapping {{label: mean}}."
            )
        if stats.classes.min() < 0 or stats.classes.max() >= ref.shape[0]:
            raise SpeechkernError(
                f"labels must lie in 0..{ref.shape[0] - 1} to index the {ref.shape[0]} rows of means; "
                f"got labels {stats.classes.min()}..{stats.classes.max()}."
            )
        per_class = ref[stats.classes]
    if ref.ndim != 2 or ref.shape[1] != d:
        raise SpeechkernError(f"means have {ref.shape[-1]} features but H has {d}; use means of the same layer.")
    _check_finite(ref, "means")
    return per_class, ref


def _centre_spread(points: NDArray[np.float64]) -> float:
    """E_i ‖p_i − p̄‖² over the rows of ``points`` (the denominator of every ratio)."""
    centred = points - points.mean(axis=0)
    return float(np.einsum("ij,ij->", centred, centred) / points.shape[0])


def _variance_from_stats(stats: ClassStats, means: Means) -> float:
    stats = stats.present()
    per_class, ref = _reference_means(stats, means)
    # Σ_{x∈c} ‖h − m‖² = scatter_c + n_c ‖μ_c − m‖²: exact for any reference mean m, no pass over H needed.
    offset = stats.means - per_class
    numerator = float(stats.scatter.sum() + stats.counts @ np.einsum("ij,ij->i", offset, offset)) / stats.n_samples
    return _ratio(numerator, _centre_spread(ref))


def train_variance(H: ArrayLike, y: ArrayLike, means: Means = None) -> float:
    """TrainVariance: ``E_x ‖h(x) − μ_y‖² / E_i ‖μ_i − μ̄‖²`` on training features (dimensionless).

    H: ``(n, d)`` features; y: ``(n,)`` labels; means: reference class means (see the module docstring), by default
    the class means of ``H``. SPEC §10 uses the train means at the final training time for every time ``t``.
    0 means fully collapsed features (every sample on its class mean).
    """
    return _variance_from_stats(class_stats(H, y, covariance=False), means)


def strong_test_variance(H: ArrayLike, y: ArrayLike, means: Means = None) -> float:
    """StrongTestVariance: the TrainVariance ratio on test features with their true labels.

    ``means`` defaults to the test class means of ``H`` (SPEC §10); pass train means to measure how far test
    features fall from the train class centres instead.
    """
    return _variance_from_stats(class_stats(H, y, covariance=False), means)


def _nearest(H: NDArray[np.floating], centers: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """(index of the nearest centre, squared distance to it) for every row of H, in float64 chunks."""
    n, d = H.shape
    k = centers.shape[0]
    rows = max(1, _CHUNK_VALUES // max(1, k * d))
    index = np.empty(n, dtype=np.int64)
    dist = np.empty(n)
    for start in range(0, n, rows):
        block = H[start : start + rows].astype(np.float64)
        # Explicit differences rather than ‖h‖² − 2h·c + ‖c‖²: exact zeros for points on a centre.
        diff = block[:, None, :] - centers[None, :, :]
        sq = np.einsum("ikj,ikj->ik", diff, diff)
        index[start : start + rows] = sq.argmin(axis=1)
        dist[start : start + rows] = sq.min(axis=1)
    return index, dist


def kmeans_centers(
    H: ArrayLike, n_clusters: int, *, n_init: int = 10, random_state: int | None = 0
) -> NDArray[np.float64]:
    """``(n_clusters, d)`` k-means centres of ``H`` (scikit-learn KMeans, best of ``n_init`` restarts)."""
    from sklearn.cluster import KMeans

    H = _features(H)
    _check_finite(H, "H")
    if not 1 <= n_clusters <= H.shape[0]:
        raise SpeechkernError(f"n_clusters must lie in 1..{H.shape[0]} (the number of samples); got {n_clusters}.")
    model = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=random_state)
    model.fit(H.astype(np.float64, copy=False))
    return np.asarray(model.cluster_centers_, dtype=np.float64)


def weak_test_variance(
    H: ArrayLike,
    n_clusters: int,
    centers: ArrayLike | None = None,
    *,
    n_init: int = 10,
    random_state: int | None = 0,
) -> float:
    """WeakTestVariance: ``E_x min_j ‖h(x) − c_j‖² / E_j ‖c_j − c̄‖²`` (labels are not used).

    centers: ``(n_clusters, d)`` centres; by default k-means centres of ``H`` itself (``n_init`` restarts,
    seeded by ``random_state``). SPEC §10 fits them once on the test features at the final time and reuses them
    for every time ``t``. It is 0 whenever every point sits on one of the centres, whatever its label.
    """
    H = _features(H)
    _check_finite(H, "H")
    if centers is None:
        c = kmeans_centers(H, n_clusters, n_init=n_init, random_state=random_state)
    else:
        c = np.asarray(centers, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != H.shape[1]:
            raise SpeechkernError(f"centers must have shape (n_clusters, {H.shape[1]}); got {c.shape}.")
        if c.shape[0] != n_clusters:
            raise SpeechkernError(f"centers has {c.shape[0]} rows but n_clusters is {n_clusters}; make them agree.")
        _check_finite(c, "centers")
    _, dist = _nearest(H, c)
    return _ratio(float(dist.mean()), _centre_spread(c))


class NearestCentreStats:
    """One streaming pass of features against fixed centres: weak test variance and NC4 agreement.

    centers: ``(k, d)`` centres (k-means centres for :meth:`weak_test_variance`; the class means, in class order,
    for NC4). W, b: the last-layer classifier ``(C, d)`` and ``(C,)``; when given, :attr:`agreement` is the
    fraction of samples whose classifier decision ``argmax(W h + b)`` equals their nearest centre's index.
    """

    def __init__(self, centers: ArrayLike, W: ArrayLike | None = None, b: ArrayLike | None = None) -> None:
        self.centers = np.asarray(centers, dtype=np.float64)
        if self.centers.ndim != 2:
            raise SpeechkernError(f"centers must be a (k, n_features) array; got shape {self.centers.shape}.")
        _check_finite(self.centers, "centers (a class without samples has NaN mean)")
        self.W, self.b = _classifier(W, b, self.centers.shape[0], self.centers.shape[1])
        self.n_samples = 0
        self._dist_sum = 0.0
        self._agree = 0

    def update(self, H: ArrayLike) -> NearestCentreStats:
        """Add a batch of features ``(n, d)``; returns self."""
        H = _features(H)
        if H.shape[1] != self.centers.shape[1]:
            raise SpeechkernError(f"batch has {H.shape[1]} features but the centres have {self.centers.shape[1]}.")
        _check_finite(H, "H")
        index, dist = _nearest(H, self.centers)
        self.n_samples += H.shape[0]
        self._dist_sum += float(dist.sum())
        if self.W is not None:
            self._agree += int(np.count_nonzero(_decide(H, self.W, self.b) == index))
        return self

    def weak_test_variance(self) -> float:
        """Mean squared distance to the nearest centre over the spread of the centres (see weak_test_variance)."""
        if self.n_samples == 0:
            raise SpeechkernError("no features were accumulated yet; call update() first.")
        return _ratio(self._dist_sum / self.n_samples, _centre_spread(self.centers))

    @property
    def agreement(self) -> float | None:
        """Fraction of samples where the classifier agrees with the nearest centre (None without W)."""
        if self.W is None or self.n_samples == 0:
            return None
        return self._agree / self.n_samples


# ----------------------------------------------------------------------------------------------------------------
# Papyan, Han & Donoho's NC1–NC4


@dataclass(frozen=True)
class NCMetrics:
    """Papyan, Han & Donoho (2020) neural-collapse metrics; each tends to 0 under collapse except NC4 (to 1).

    nc1: ``tr(Σ_W Σ_B⁺) / C`` — within-class covariance against the pseudo-inverse of the between-class
    covariance of the class means about their mean (NaN when all class means coincide).
    nc2_equinorm_means / nc2_equinorm_classifier: coefficient of variation (std / mean, population std) of the
    norms of the centred class means / of the classifier rows.
    nc2_equiangular_means / nc2_equiangular_classifier: standard deviation of the pairwise cosines (c ≠ c').
    nc2_maxangle_means / nc2_maxangle_classifier: mean of ``|cos + 1/(C−1)|`` over pairs, 0 for a simplex ETF.
    nc3: self-duality ``‖W/‖W‖_F − M/‖M‖_F‖_F²`` with ``M`` the ``(C, d)`` centred class means.
    nc4_agreement: fraction of samples where ``argmax(W h + b)`` picks the nearest class mean.
    Classifier rows are used as they are (not centred). Entries that need ``W`` are None without it;
    pairwise entries are NaN for fewer than two classes.
    """

    n_samples: int
    n_classes: int
    nc1: float
    nc2_equinorm_means: float
    nc2_equiangular_means: float
    nc2_maxangle_means: float
    nc2_equinorm_classifier: float | None = None
    nc2_equiangular_classifier: float | None = None
    nc2_maxangle_classifier: float | None = None
    nc3: float | None = None
    nc4_agreement: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _classifier(
    W: ArrayLike | None, b: ArrayLike | None, n_classes: int, d: int
) -> tuple[NDArray[np.float64] | None, NDArray[np.float64] | None]:
    if W is None:
        if b is not None:
            raise SpeechkernError("a bias b was given without its classifier weights W; pass both.")
        return None, None
    Wa = np.asarray(W, dtype=np.float64)
    if Wa.shape != (n_classes, d):
        raise SpeechkernError(
            f"W must have shape (n_classes, n_features) = ({n_classes}, {d}), one row per class in class order; "
            f"got {Wa.shape}."
        )
    _check_finite(Wa, "W")
    ba = None
    if b is not None:
        ba = np.asarray(b, dtype=np.float64)
        if ba.shape != (n_classes,):
            raise SpeechkernError(f"b must have shape ({n_classes},), one bias per class; got {ba.shape}.")
    return Wa, ba


def _decide(H: NDArray[np.floating], W: NDArray[np.float64], b: NDArray[np.float64] | None) -> NDArray[np.int64]:
    scores = H.astype(np.float64, copy=False) @ W.T
    if b is not None:
        scores += b
    return scores.argmax(axis=1)


def _shape_stats(rows: NDArray[np.float64]) -> tuple[float, float, float]:
    """(coefficient of variation of row norms, std of pairwise cosines, mean |cos + 1/(C−1)|)."""
    C = rows.shape[0]
    norms = np.linalg.norm(rows, axis=1)
    equinorm = float(norms.std() / norms.mean()) if norms.mean() > 0 else float("nan")
    if C < 2 or np.any(norms == 0):
        return equinorm, float("nan"), float("nan")
    unit = rows / norms[:, None]
    cos = (unit @ unit.T)[np.triu_indices(C, k=1)]
    return equinorm, float(cos.std()), float(np.abs(cos + 1.0 / (C - 1)).mean())


def _nc1(stats: ClassStats, centred: NDArray[np.float64]) -> float:
    if stats.within is None:
        return float("nan")
    sigma_w = stats.within / stats.n_samples
    # Σ_B = MᵀM / C with M the (C, d) centred means; from M's thin SVD M = V S Uᵀ, Σ_B⁺ = U diag(C / S²) Uᵀ, so
    # tr(Σ_W Σ_B⁺) / C = Σ_k u_kᵀ Σ_W u_k / s_k². This never forms a d×d inverse and copes with d < C.
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    # Centred means have rank ≤ C − 1 exactly; their round-off directions scale with the *uncentred* means (far
    # from the origin, centring leaves errors of eps·‖μ‖), so both bound the numerical rank.
    scale = max(float(s[0]) if s.size else 0.0, float(np.abs(stats.means).max()) * np.sqrt(centred.shape[0]))
    if s.size == 0 or s[0] <= 0:
        return float("nan")
    keep = s > scale * max(centred.shape) * np.finfo(np.float64).eps * 16
    keep[centred.shape[0] - 1 :] = False
    if not keep.any():
        return float("nan")
    u = vt[keep]
    projected = np.einsum("kd,de,ke->k", u, sigma_w, u)
    return float(np.sum(projected / s[keep] ** 2))


def _nc_from_stats(stats: ClassStats, W: ArrayLike | None, b: ArrayLike | None, agreement: float | None) -> NCMetrics:
    present = stats.present()
    C = present.means.shape[0]
    Wa, _ = _classifier(W, b, stats.means.shape[0], stats.n_features)
    if Wa is not None and stats.means.shape[0] != C:
        missing = stats.classes[stats.counts == 0].tolist()
        raise SpeechkernError(f"classes {missing} have no samples; NC3/NC4 need every classifier row's class.")
    centred = present.means - present.means.mean(axis=0)
    eq_m, ang_m, max_m = _shape_stats(centred)
    fields: dict[str, Any] = {
        "n_samples": present.n_samples,
        "n_classes": C,
        "nc1": _nc1(present, centred),
        "nc2_equinorm_means": eq_m,
        "nc2_equiangular_means": ang_m,
        "nc2_maxangle_means": max_m,
    }
    if Wa is not None:
        eq_w, ang_w, max_w = _shape_stats(Wa)
        w_unit = Wa / np.linalg.norm(Wa)
        m_norm = np.linalg.norm(centred)
        m_unit = centred / m_norm if m_norm > 0 else centred * np.nan
        diff = w_unit - m_unit
        fields.update(
            nc2_equinorm_classifier=eq_w,
            nc2_equiangular_classifier=ang_w,
            nc2_maxangle_classifier=max_w,
            nc3=float(np.einsum("ij,ij->", diff, diff)),
            nc4_agreement=agreement,
        )
    return NCMetrics(**fields)


def nc_metrics(H: ArrayLike, y: ArrayLike, W: ArrayLike | None = None, b: ArrayLike | None = None) -> NCMetrics:
    """Papyan et al.'s NC1–NC4 of features ``H`` ``(n, d)`` with labels ``y`` (see :class:`NCMetrics`).

    W: ``(C, d)`` last-layer classifier weights, row ``k`` for the ``k``-th sorted label; b: ``(C,)`` its bias.
    Without W only NC1 and the class-mean parts of NC2 are computed.
    """
    H = _features(H)
    stats = class_stats(H, y, covariance=True)
    Wa, ba = _classifier(W, b, stats.means.shape[0], stats.n_features)
    agreement = None
    if Wa is not None:
        nearest, _ = _nearest(H, stats.means)
        agreement = float(np.mean(_decide(H, Wa, ba) == nearest))
    return _nc_from_stats(stats, W, b, agreement)


def stack_stats(batches: Iterable[tuple[ArrayLike, ArrayLike]], **kwargs: Any) -> FeatureStats:
    """A :class:`FeatureStats` fed with every ``(H, y)`` batch of an iterable (keyword arguments go to it)."""
    acc = FeatureStats(**kwargs)
    for H, y in batches:
        acc.update(H, y)
    return acc
