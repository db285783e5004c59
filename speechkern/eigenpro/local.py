"""Local kernel machines: a median-split tree partitions the frames into leaves, every leaf frame is a centre and
each leaf is solved exactly (kernel ridge regression, :mod:`~speechkern.eigenpro.exact`); a point is predicted by
the machine of its leaf. For a compact model each leaf keeps m of its frames as centres, solved exactly in the
Nyström form over all its frames.

The partition follows xRFM (Beaglehole, Holzmüller, Radhakrishnan & Belkin 2025): each node splits its points at
the median of their projections on the node's top principal direction, so leaves are balanced and routing is
d multiply-adds per level. With one leaf the model is the global exact solve. Design notes: docs/engine.md.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from speechkern.device import resolve_device
from speechkern.eigenpro._sklearn import MultiOutputTags, to_numpy, writable32
from speechkern.eigenpro.exact import MAX_EXACT_POINTS, exact_bytes, nystrom_bytes, nystrom_solve, ridge_solve
from speechkern.errors import SpeechkernError
from speechkern.kernels import (
    ExponentialPowerKernel,
    check_budget_gb,
    default_budget_bytes,
    prepare_points,
    shared_center_products,
)
from speechkern.parallel import SerialExecutor
from speechkern.progress import report

logger = logging.getLogger(__name__)

FORMAT = "speechkern.local"
FORMAT_VERSION = 3  # 2: several trees (``trees``; version 1 reads as one); 3: a global model (``global_centers``)
CENTERS_DTYPES = {"float32": torch.float32, "float16": torch.float16}
GLOBAL_TENSORS = ("global_centers", "global_weights")  # the global machine's, from format version 3
DIRECTION_SAMPLE = 8192  # points of a node whose principal direction is computed (the median uses all of them)
DEFAULT_LEAF_SIZE = 20_000  # largest leaf; measured in benchmarks/kernel_reference.py
# Points the global machine is fitted to at most (a seeded draw beyond): its normal equations cost n·m² float64
# multiply-adds, 147 s for every frame of the scaling benchmark (348 162) at m = 4000 on the quiet 2 cores. A draw of
# 100 000 saved two thirds of that but cost validation MSE (0.05306 against 0.05286 with the leaves; 0.05174 against
# 0.05156 in kernel_scaling.py), so up to 400 000 frames every frame is fitted.
DEFAULT_GLOBAL_FRAMES = 400_000
# Soft-routing temperatures tried on the validation frames (margins in units of the node's spread); 0 is hard
# routing, always a candidate, so soft routing is kept only where it lowers the validation MSE.
TEMPERATURES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)
NEGLIGIBLE_WEIGHT = 1e-3  # a second leaf below this weight is not evaluated


def _principal_direction(X: torch.Tensor, rng: np.random.Generator, component: int = 0) -> torch.Tensor:
    """Unit principal direction (features,) number ``component`` (0: the top one; the last one there is when the
    rows span fewer) of the rows of X, from at most DIRECTION_SAMPLE of them."""
    if X.shape[0] > DIRECTION_SAMPLE:
        X = X[torch.from_numpy(rng.choice(X.shape[0], DIRECTION_SAMPLE, replace=False)).to(X.device)]
    centred = X.to(torch.float64) - X.to(torch.float64).mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    v = vh[min(component, vh.shape[0] - 1)]
    return (v * torch.sign(v[v.abs().argmax()])).to(torch.float32)  # sign fixed: the same tree every time


def median_tree(
    X: torch.Tensor, depth: int, seed: int = 0, component: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A complete binary tree of ``depth`` levels over the rows of X (n × features): heap-ordered split
    directions (2^depth − 1 × features) and thresholds (2^depth − 1,), and the leaf (n,) int64 of every row. Node i
    sends x to child 2i + 1 when x·direction ≤ threshold (the median of its points' projections), else to 2i + 2.
    The direction is the node's principal direction number ``component`` (0, the top one, as xRFM splits; other
    components give the differently cut trees of an ensemble).
    Each direction is scaled by 1/(the spread of its node's projections), so x·direction − threshold is a margin in
    units of that spread (soft routing compares margins across levels). Rows that project onto the threshold itself
    (repeated frames, such as digital silence) are shared between the children so that every split halves its
    rows: no leaf holds more than ⌈n / 2^depth⌉ of them, which its exact solve relies on (:func:`route` sends such
    points left). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    nodes = 2**depth - 1
    directions = torch.zeros(nodes, X.shape[1], dtype=torch.float32, device=X.device)
    thresholds = torch.zeros(nodes, dtype=torch.float32, device=X.device)
    members = [torch.arange(X.shape[0], device=X.device)]
    for node in range(nodes):
        rows = members[node]
        points = X[rows]
        if rows.numel() > 1:
            direction = _principal_direction(points, rng, component)
            proj = points @ direction
            spread = float(proj.std()) if rows.numel() > 2 else 1.0
            directions[node] = direction / (spread if spread > 0 else 1.0)
            proj = (points * directions[node]).sum(dim=1)  # as route() computes it, to the last bit
            thresholds[node] = proj.median()
            left = proj < thresholds[node]
            ties = torch.nonzero(proj == thresholds[node]).squeeze(1)
            left[ties[: (rows.numel() + 1) // 2 - int(left.sum())]] = True  # the left child takes ⌈n/2⌉
        else:
            left = torch.ones(rows.numel(), dtype=torch.bool, device=X.device)
        members += [rows[left], rows[~left]]
    leaves = torch.empty(X.shape[0], dtype=torch.int64, device=X.device)
    for j, rows in enumerate(members[nodes:]):
        leaves[rows] = j
    return directions, thresholds, leaves


def route(X: torch.Tensor, directions: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Leaf index (n,) int64 of every row of X in the tree of :func:`median_tree`."""
    depth = int(round(math.log2(directions.shape[0] + 1)))
    node = torch.zeros(X.shape[0], dtype=torch.int64, device=X.device)
    for _ in range(depth):
        proj = (X * directions[node]).sum(dim=1)
        node = 2 * node + 1 + (proj > thresholds[node]).long()
    return node - (2**depth - 1)


def route_soft(
    X: torch.Tensor, directions: torch.Tensor, thresholds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(leaf, second leaf, margin), each (n,): every row's leaf; the leaf across the split boundary it lies closest
    to (the other child at that node, routed on below as usual); and its distance to that boundary in units of
    the node's spread (:func:`median_tree`). Without splits the second leaf is the leaf and the margin infinite."""
    depth = int(round(math.log2(directions.shape[0] + 1)))
    n = X.shape[0]
    node = torch.zeros(n, dtype=torch.int64, device=X.device)
    margin = torch.full((n,), math.inf, device=X.device)
    flip_at = torch.zeros(n, dtype=torch.int64, device=X.device)  # the node whose other child holds the second leaf
    for _ in range(depth):
        gap = (X * directions[node]).sum(dim=1) - thresholds[node]
        closer = gap.abs() < margin
        margin = torch.where(closer, gap.abs(), margin)
        flip_at = torch.where(closer, node, flip_at)
        node = 2 * node + 1 + (gap > 0).long()
    second = torch.zeros(n, dtype=torch.int64, device=X.device)
    started = torch.zeros(n, dtype=torch.bool, device=X.device)
    for _ in range(depth):  # the hard path up to the flip node, its other child, then the hard path again
        right = (X * directions[second]).sum(dim=1) > thresholds[second]
        flip = ~started & (second == flip_at)
        started |= flip
        second = 2 * second + 1 + (right ^ flip).long()
    leaves = node - (2**depth - 1)
    return leaves, (second - (2**depth - 1)) if depth else leaves, margin


def second_leaf_weight(margin: torch.Tensor, temperature: float) -> torch.Tensor:
    """Weight (n,) of the second leaf: sigmoid(−margin/temperature), 0 for hard routing (temperature 0)."""
    if temperature <= 0:
        return torch.zeros_like(margin)
    return torch.sigmoid(-margin / temperature)


def global_fit_frames(n: int, m: int, global_frames: int) -> int:
    """Frames of n the global machine of m centres is fitted to: all n for ``global_frames`` 0 or at least n, else
    ``global_frames`` (at least its m centres)."""
    return n if not global_frames else min(n, max(int(global_frames), m))


def check_global_centers(
    m: Any, budget_bytes: int | None = None, name: str = "global_centers", budget_name: str = "memory_budget_gb"
) -> int:
    """``m``, the centres of the global machine under the leaves, as an int: a whole number from 0 to
    :data:`~speechkern.eigenpro.exact.MAX_EXACT_POINTS` whose Nyström system (:func:`~speechkern.eigenpro.exact.
    nystrom_bytes`) fits ``budget_bytes`` (unchecked when None). Raises :class:`~speechkern.errors.SpeechkernError`
    naming ``name`` (and ``budget_name``, the setting of the budget) otherwise."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 0 <= m <= MAX_EXACT_POINTS:
        raise SpeechkernError(f"{name}={m!r}: expected a whole number of centres from 0 (none) to {MAX_EXACT_POINTS} "
                              "(the global machine's system is factorised, and LAPACK indexes it with 32-bit "
                              "integers)")  # fmt: skip
    if budget_bytes is not None and m and nystrom_bytes(int(m)) > budget_bytes:
        raise SpeechkernError(f"{name}={m}: the global machine's system needs {nystrom_bytes(int(m)) / 2**30:.2f} GiB, "
                              f"over the memory budget of {budget_bytes / 2**30:.2f} GiB; choose fewer centres (0: "
                              f"none) or raise {budget_name}")  # fmt: skip
    return int(m)


def tree_depth(n: int, leaf_size: int) -> int:
    """Levels of median splits that bring n points to leaves of at most ``leaf_size`` (halving, rounded up)."""
    return max(0, math.ceil(math.log2(max(1.0, n / max(1, leaf_size)))))


class LocalKernelRegressor(MultiOutputTags, RegressorMixin, BaseEstimator):
    """Kernel ridge regression solved exactly in the leaves of a median-split tree (one leaf: the global solve).

    Parameters
    ----------
    shape, bandwidth:
        Kernel shape γ ∈ (0, 2] and bandwidth σ > 0: k(x, z) = exp(−‖x − z‖^γ/σ).
    ridge:
        λ ≥ 0 of each leaf's problem min ‖K·w − Y‖² + λ·wᵀK·w, i.e. w = (K + λI)⁻¹·Y (with ``leaf_centers``:
        min ‖K(X, Z)·w − Y‖² + λ·wᵀK(Z, Z)·w, :func:`~speechkern.eigenpro.exact.nystrom_solve`).
    temperature:
        Soft routing: a point is predicted by its leaf and, with weight sigmoid(−margin/temperature), by the leaf
        across the split boundary it lies closest to (margin in units of that node's spread). ``"auto"``
        (default): the value of :data:`TEMPERATURES` with the lowest validation MSE when validation data are
        given (0, hard routing, among them), else 0.
    leaf_size:
        Largest leaf (points); the tree has ⌈log2(n / leaf_size)⌉ levels. At most 40 000 (LAPACK's 32-bit
        indices, :data:`~speechkern.eigenpro.exact.MAX_EXACT_POINTS`) unless ``leaf_centers`` is smaller.
    trees:
        Partitions averaged (default 1). Tree t splits every node along its principal direction number t, so the
        trees cut the data differently; each is solved in full and a point's prediction is the mean of the
        trees' (each routed as ``temperature`` says). Fitting, prediction and the model's size grow t-fold;
        with one leaf the trees would be the same, and one is kept.
    global_centers:
        0 (default): the leaves model the targets. m > 0, with more than one leaf: first a global machine of m
        centres (a seeded uniform draw of the points) fitted to the points in the Nyström form
        (:func:`~speechkern.eigenpro.exact.nystrom_solve`, the same kernel and ridge), then the leaves fitted to
        its residuals at every point; a point's prediction is the sum. The global machine carries what the leaves
        cannot see across their boundaries (every frame of the scaling benchmark: −2.6 % validation MSE with 4000
        centres, docs/engine.md). global_frames·m² multiply-adds, 24·m² bytes; a point costs m more kernel
        evaluations.
    global_frames:
        Points the global machine is fitted to: where there are more, a seeded draw of this many (at least its
        m centres, which are drawn among them); 0: every point. Default :data:`DEFAULT_GLOBAL_FRAMES`.
    leaf_centers:
        0 (default): every leaf frame is a centre. m > 0: each leaf larger than m keeps m of its frames (a seeded
        uniform draw) as its centres, fitted to all its frames (n_leaf·m² multiply-adds); the model then holds
        leaves × m centres and a frame costs m kernel evaluations (two leaves' near a split).
    centers_dtype:
        ``"float32"`` (default) or ``"float16"``: the centres are rounded to float16 before the leaves are solved
        and stored so, halving their share of the model file (prediction computes in float32).
    device:
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    memory_budget_gb:
        Memory one leaf's kernel matrix may take (GiB); default a third of the device's available memory. A leaf
        size beyond it raises :class:`~speechkern.errors.SpeechkernError`.
    progress_task:
        Name of the progress bar this model reports to.
    seed:
        Seeds the samples the split directions are computed from.

    Attributes
    ----------
    centers_, weights_:
        Float32 tensors (centres × features) and (centres × outputs): the centres grouped by leaf, tree after
        tree (every training point, or each leaf's ``leaf_centers`` kept points), and their weights.
    leaf_offsets_:
        int64 tensor (trees · leaves + 1): leaf j of tree t holds rows ``leaf_offsets_[i]:leaf_offsets_[i + 1]``,
        i = t · leaves + j.
    split_directions_, split_thresholds_:
        The trees (:func:`median_tree`), one after the other: (trees · (leaves − 1) × features) and
        (trees · (leaves − 1),).
    n_trees_:
        Trees kept (``trees``, or 1 where the model is one leaf).
    global_centers_, global_weights_:
        The global machine's centres (m × features) and weights (m × outputs), float32; m = 0 without one.
    temperature_:
        The soft-routing temperature used (0: hard routing); ``val_mse_by_temperature_`` when it was tuned.
    kernel_, history_ (one entry: train_mse on up to 1000 training points, val_mse, seconds), best_epoch_ (1),
    n_features_in_, n_outputs_, y_ndim_.
    """

    def __init__(
        self,
        shape: float = 1.0,
        bandwidth: float = 1.0,
        *,
        ridge: float = 1e-2,
        temperature: float | str = "auto",
        leaf_size: int = DEFAULT_LEAF_SIZE,
        trees: int = 1,
        global_centers: int = 0,
        global_frames: int = DEFAULT_GLOBAL_FRAMES,
        leaf_centers: int = 0,
        centers_dtype: str = "float32",
        device: str = "auto",
        memory_budget_gb: float | None = None,
        progress_task: str = "local",
        seed: int = 0,
    ) -> None:
        self.shape = shape
        self.bandwidth = bandwidth
        self.ridge = ridge
        self.temperature = temperature
        self.leaf_size = leaf_size
        self.trees = trees
        self.global_centers = global_centers
        self.global_frames = global_frames
        self.leaf_centers = leaf_centers
        self.centers_dtype = centers_dtype
        self.device = device
        self.memory_budget_gb = memory_budget_gb
        self.progress_task = progress_task
        self.seed = seed

    def fit(self, X: Any, y: Any, X_val: Any = None, Y_val: Any = None, *, executor=None) -> LocalKernelRegressor:
        """Partition X (n × features), solve every leaf for y (n,) or (n × outputs); score X_val/Y_val if given.

        ``executor`` (:mod:`speechkern.parallel`; default: here, one leaf after the other) runs the leaf solves
        (:func:`solve_leaf`) as tasks, e.g. on a Ray cluster; the model is the same either way. It is not kept.
        """
        X, y = validate_data(self, to_numpy(X), to_numpy(y), multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32))  # fmt: skip
        check_global_centers(self.global_centers)
        for name in ("leaf_size", "trees", "leaf_centers", "global_frames", "seed"):
            value = getattr(self, name)
            least = 0 if name in ("leaf_centers", "global_frames", "seed") else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                what = {"trees": " of trees", "seed": ""}.get(name, " of points")
                raise SpeechkernError(f"{name}={value!r}: expected a whole number{what} ≥ {least}")
        if self.centers_dtype not in CENTERS_DTYPES:
            raise SpeechkernError(f"centers_dtype={self.centers_dtype!r}: expected one of {', '.join(CENTERS_DTYPES)}")
        solved = min(int(self.leaf_size), int(self.leaf_centers) or int(self.leaf_size))  # points a leaf factorises
        if solved > MAX_EXACT_POINTS:
            what = "leaf_centers" if self.leaf_centers else "leaf_size"
            raise SpeechkernError(f"{what}={solved}: at most {MAX_EXACT_POINTS} (each leaf is solved exactly and "
                                  "LAPACK indexes its matrix with 32-bit integers)")  # fmt: skip
        if not (np.isfinite(float(self.ridge)) and float(self.ridge) >= 0):
            raise SpeechkernError(f"ridge={self.ridge!r}: expected a finite number ≥ 0")
        if executor is not None and not all(callable(getattr(executor, f, None)) for f in ("share", "run")):
            raise SpeechkernError(f"executor={executor!r}: expected None or a speechkern.parallel executor "
                                  "(SerialExecutor, RayExecutor: make_executor(ray=True) makes one)")  # fmt: skip
        started = time.perf_counter()
        device = resolve_device(self.device)
        self._leaf_cache = None
        self.__dict__.pop("val_mse_by_temperature_", None)  # of an earlier fit
        self.kernel_ = ExponentialPowerKernel(self.shape, self.bandwidth)
        self.y_ndim_ = 1 if np.ndim(y) == 1 else 2
        Y = torch.from_numpy(writable32(np.reshape(y, (len(y), -1)))).to(device)
        Xt = torch.from_numpy(writable32(X)).to(device)
        self.n_outputs_ = Y.shape[1]
        n = Xt.shape[0]
        depth = tree_depth(n, int(self.leaf_size))
        if depth > 0 and int(self.trees) > X.shape[1]:  # tree t cuts along principal direction t; past the last
            raise SpeechkernError(f"trees={self.trees}: at most {X.shape[1]}, one per principal direction of the "
                                  f"{X.shape[1]} features (more would repeat the last tree)")  # fmt: skip
        largest = math.ceil(n / 2**depth)
        m = int(self.leaf_centers)
        needed = nystrom_bytes(m) if 0 < m < largest else exact_bytes(largest)
        budget = (default_budget_bytes(device) if self.memory_budget_gb is None
                  else check_budget_gb("memory_budget_gb", self.memory_budget_gb, device))  # fmt: skip
        if needed > budget:
            raise SpeechkernError(
                f"leaves of {min(largest, m or largest)} centres need {needed / 2**30:.2f} GiB each to be solved, over "
                f"the memory budget of {budget / 2**30:.2f} GiB; lower leaf_size or leaf_centers, or raise "
                "memory_budget_gb"
            )
        rng = np.random.default_rng(self.seed)
        self.n_trees_ = int(self.trees) if depth > 0 else 1
        self._global_cache = None
        m_global = min(int(self.global_centers), n) if depth > 0 else 0  # one leaf is already the global solve
        check_global_centers(m_global, budget)
        with torch.no_grad():
            Y_leaves = self._fit_global(Xt, Y, m_global)
            trees = [median_tree(Xt, depth, self.seed, component=t) for t in range(self.n_trees_)]
            self.split_directions_ = torch.cat([directions for directions, _, _ in trees])
            self.split_thresholds_ = torch.cat([thresholds for _, thresholds, _ in trees])
            # Every tree's leaves in one sequence (tree after tree), so that one executor runs all their solves.
            order = torch.cat([torch.argsort(leaves, stable=True) for _, _, leaves in trees])
            counts = torch.cat([torch.bincount(leaves, minlength=2**depth) for _, _, leaves in trees])
            Xs, Ys, Ys_leaves = Xt[order].contiguous(), Y[order], Y_leaves[order]
            del Xt, Y, Y_leaves, trees
            offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).cpu()
            bounds = [(int(offsets[j]), int(offsets[j + 1])) for j in range(counts.numel())]
            # Compact leaves' centres are drawn here, in leaf order, so the model is the same wherever leaves run.
            keeps = [np.sort(rng.choice(b - a, m, replace=False)) if 0 < m < b - a else None for a, b in bounds]
            centers, weights = self._solve_leaves(Xs, Ys_leaves, bounds, keeps, executor or SerialExecutor())
            del Ys_leaves
            self.centers_, self.weights_ = torch.cat(centers), torch.cat(weights)
            sizes = torch.tensor([len(c) for c in centers], dtype=torch.int64)
            self.leaf_offsets_ = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
            self.temperature_ = 0.0 if self.temperature == "auto" else float(self.temperature)
            check = torch.from_numpy(np.random.default_rng(self.seed).choice(n, min(n, 1000), replace=False))
            check = check.to(Xs.device)
            train_mse = float((self.predict_tensor(Xs[check]) - Ys[check]).square().mean())
        val_mse = None
        if X_val is not None and Y_val is not None:
            Xv = check_array(to_numpy(X_val), dtype=(np.float64, np.float32))
            Yv = np.reshape(np.asarray(to_numpy(Y_val), dtype=np.float32), (len(Xv), -1))
            if self.temperature == "auto" and depth > 0:  # one leaf has no boundary to route across
                self._tune_temperature(torch.from_numpy(writable32(Xv)), torch.from_numpy(Yv))
            val_mse = float(np.mean((self._predict2d(Xv) - Yv) ** 2))
        seconds = time.perf_counter() - started
        self.history_ = [{"epoch": 1, "train_mse": train_mse, "val_mse": val_mse, "seconds": seconds}]
        self.best_epoch_ = 1
        trees = f"{self.n_trees_} trees of " if self.n_trees_ > 1 else ""
        glob = f" + a global machine of {m_global}" if m_global else ""
        logger.info("%s: %d points in %s%d leaves of %d–%d, %d centres%s, λ %.3g; train mse %.4g, val mse %s, "
                    "%.1f s", self.progress_task, n, trees, 2**depth, int(counts.min()), int(counts.max()),
                    len(self.centers_), glob, float(self.ridge), train_mse,
                    "n/a" if val_mse is None else f"{val_mse:.4g}", seconds)  # fmt: skip
        return self

    def _fit_global(self, X: torch.Tensor, Y: torch.Tensor, m: int) -> torch.Tensor:
        """Fit the global machine of m centres (none for m = 0) to ``global_frames`` of X, Y; the targets left for
        the leaves at every point."""
        n, d = X.shape
        if not m:
            self.global_centers_ = X.new_zeros(0, d)
            self.global_weights_ = Y.new_zeros(0, Y.shape[1])
            return Y
        drawn = global_fit_frames(n, m, self.global_frames)
        if drawn < n:  # the normal equations cost drawn·m²; the residuals are of every point
            rows = np.sort(np.random.default_rng([self.seed, 2]).choice(n, drawn, replace=False))
            rows = torch.from_numpy(rows).to(X.device)
            Xg, Yg = X[rows], Y[rows]
        else:
            Xg, Yg = X, Y
        keep = np.sort(np.random.default_rng([self.seed, 1]).choice(Xg.shape[0], m, replace=False))
        Z = Xg[torch.from_numpy(keep).to(X.device)].to(CENTERS_DTYPES[self.centers_dtype]).to(torch.float32)
        where = {"global_centers": m, "global_frames": Xg.shape[0]}
        report(self.progress_task, 0, 1, "kernel global machine solved", **where)
        self.global_centers_, self.global_weights_ = Z, nystrom_solve(self.kernel_, Xg, Yg, Z, float(self.ridge))
        del Xg, Yg
        report(self.progress_task, 1, 1, "kernel global machine solved", **where)
        return Y - predict_global([self], X)[0]

    def _solve_leaves(self, Xs: torch.Tensor, Ys: torch.Tensor, bounds: list[tuple[int, int]], keeps: list,
                      executor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
        """Each leaf's (centres, weights) on Xs's device, in leaf order, its solve run by ``executor``."""
        # Here: the tensors in place, on their device. Elsewhere: NumPy arrays, which Ray's object store shares
        # with the tasks without a copy each.
        here = isinstance(executor, SerialExecutor)
        data = tuple(executor.share(A if here else A.cpu().numpy()) for A in (Xs, Ys))
        solve = {"shape": self.shape, "bandwidth": self.bandwidth, "ridge": float(self.ridge),
                 "centers_dtype": self.centers_dtype, "device": self.device}  # fmt: skip
        calls = [((*data, a, b, keep), solve) for (a, b), keep in zip(bounds, keeps, strict=True)]
        centers: list = [None] * len(calls)
        weights: list = [None] * len(calls)
        for done, (j, (Z, w)) in enumerate(executor.run(solve_leaf, calls), 1):  # in completion order
            centers[j], weights[j] = Z.to(Xs.device), w.to(Xs.device)
            a, b = bounds[j]
            report(self.progress_task, done, len(calls), "kernel leaves solved", leaf_points=b - a)
        return centers, weights

    def _tune_temperature(self, Xv: torch.Tensor, Yv: torch.Tensor) -> None:
        """temperature_: the value of :data:`TEMPERATURES` with the lowest validation MSE (clipped to [0, 1] as
        masks are), from one prediction of each validation frame by its leaf and by its second leaf in each tree
        (one temperature for all the trees)."""
        Xv = Xv.to(self.centers_.device)
        routes = [_route_tree(self, t, Xv) for t in range(self.n_trees_)]
        first = [_leaf_predictions([self], Xv, leaves)[0] for leaves, _, _ in routes]
        other = [_leaf_predictions([self], Xv, second)[0] for _, second, _ in routes]
        Yv = Yv.to(first[0].device)
        base = predict_global([self], Xv)[0]
        scores = {}
        for t in TEMPERATURES:
            pred = base.clone()
            for (_, _, margin), a, b in zip(routes, first, other, strict=True):
                w = second_leaf_weight(margin, t).unsqueeze(1)
                pred += (a * (1 - w) + b * w) / len(routes)
            scores[t] = float((pred.clamp(0, 1) - Yv).square().mean())
        self.temperature_ = min(scores, key=scores.get)
        self.val_mse_by_temperature_ = scores
        logger.info("%s: soft-routing temperature %g (validation MSE %s)", self.progress_task, self.temperature_,
                    ", ".join(f"{t:g}: {v:.5f}" for t, v in scores.items()))  # fmt: skip

    @property
    def n_leaves_(self) -> int:
        """Leaves of each tree."""
        return int(self.leaf_offsets_.numel() - 1) // self.n_trees_

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n,) for 1-D training targets, else (n × outputs); float64 for float64 X, else float32."""
        check_is_fitted(self, "weights_")
        X = validate_data(self, to_numpy(X), reset=False, dtype=(np.float64, np.float32))
        out = self._predict2d(X).astype(X.dtype, copy=False)
        return out[:, 0] if self.y_ndim_ == 1 else out

    def _predict2d(self, X: np.ndarray) -> np.ndarray:
        return self.predict_tensor(torch.from_numpy(writable32(X))).cpu().numpy()

    def predict_tensor(self, X: torch.Tensor) -> torch.Tensor:
        """Each row's leaf machine at that row, float32 (n × outputs) on the model's device."""
        check_is_fitted(self, "weights_")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise SpeechkernError(f"input has shape {tuple(X.shape)}; expected (frames, {self.n_features_in_})")
        return predict_local([self], X)[0]

    def to_state(self, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (keys ``prefix + name``, contiguous, on the CPU) and a JSON-able configuration."""
        check_is_fitted(self, "weights_")
        names = ("centers", "weights", "leaf_offsets", "split_directions", "split_thresholds", *GLOBAL_TENSORS)
        tensors = {f"{prefix}{name}": getattr(self, f"{name}_").detach().cpu().contiguous() for name in names}
        for name in ("centers", "global_centers"):
            tensors[f"{prefix}{name}"] = tensors[f"{prefix}{name}"].to(CENTERS_DTYPES[self.centers_dtype])
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "params": self.get_params(),
                  "kernel": self.kernel_.to_config(), "n_features_in": int(self.n_features_in_),
                  "n_outputs": int(self.n_outputs_), "y_ndim": int(self.y_ndim_), "history": self.history_,
                  "temperature": float(self.temperature_), "n_trees": int(self.n_trees_)}  # fmt: skip
        return tensors, config

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any], prefix: str = "",
                   device: str | None = None) -> LocalKernelRegressor:  # fmt: skip
        """A fitted estimator from :meth:`to_state`'s output, its tensors on ``device`` (default ``"auto"``).

        Raises SpeechkernError naming what does not fit (a missing or mistyped entry, tensors whose shapes, dtypes
        or values disagree with the configuration, NaN or infinite values): a damaged file never gives a model.
        """
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            found = config.get("format") if isinstance(config, dict) else config
            raise SpeechkernError(f"model state of format {found!r}: expected {FORMAT!r}")
        version = _whole(config.get("format_version", 0), "format_version", 0)
        if version > FORMAT_VERSION:
            raise SpeechkernError(f"local kernel model version {version} is newer than this "
                                  f"speechkern understands ({FORMAT_VERSION}); upgrade speechkern")  # fmt: skip
        for key in ("params", "kernel"):
            if not isinstance(config.get(key), dict):
                raise _damaged(f"{key} is {config.get(key)!r}, expected an object")
        try:
            est = cls(**config["params"])
            est.kernel_ = ExponentialPowerKernel.from_config(config["kernel"])
            check_global_centers(est.global_centers)  # a resumed run fits its remaining subbands with it
        except (TypeError, ValueError, KeyError, SpeechkernError) as err:
            raise _damaged(f"params or kernel cannot be rebuilt ({type(err).__name__}: {err})") from None
        est.n_features_in_ = _whole(config.get("n_features_in"), "n_features_in", 1)
        est.n_outputs_ = _whole(config.get("n_outputs"), "n_outputs", 1)
        est.y_ndim_ = _whole(config.get("y_ndim"), "y_ndim", 1)
        est.n_trees_ = _whole(config.get("n_trees", 1), "n_trees", 1)  # version 1: one tree
        temperature = config.get("temperature", 0.0)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not 0 <= temperature < math.inf
        ):
            raise _damaged(f"temperature is {temperature!r}, expected a finite number ≥ 0")
        est.temperature_ = float(temperature)
        history = config.get("history", [])
        est.history_, est.best_epoch_ = (list(history) if isinstance(history, list) else []), 1
        dev = resolve_device(device if device is not None else "auto")
        for name in ("centers", "weights", "leaf_offsets", "split_directions", "split_thresholds", *GLOBAL_TENSORS):
            value = tensors.get(f"{prefix}{name}")
            if name in GLOBAL_TENSORS and version < 3:  # before the global machine: none
                if isinstance(value, torch.Tensor) and value.numel():
                    raise _damaged(f"format version {version} has no global machine, yet it holds {prefix}{name} "
                                   f"{tuple(value.shape)}")  # fmt: skip
                value = torch.zeros(0, est.n_features_in_ if name == "global_centers" else est.n_outputs_)
            if not isinstance(value, torch.Tensor):
                raise SpeechkernError(f"local kernel model state lacks the tensor {prefix}{name}")
            if name == "leaf_offsets" and (
                value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
            ):
                raise _damaged(f"{prefix}leaf_offsets is {value.dtype}, expected integer row offsets")
            if name != "leaf_offsets" and not value.is_floating_point():
                raise _damaged(f"{prefix}{name} is {value.dtype}, expected floating-point values")
            if name != "leaf_offsets" and not bool(torch.isfinite(value.float()).all()):
                raise _damaged(f"{prefix}{name} holds NaN or infinite values")
            setattr(est, f"{name}_", value if name == "leaf_offsets" else value.to(dev, torch.float32))
        offsets, trees, d = est.leaf_offsets_, est.n_trees_, est.n_features_in_
        leaves = (offsets.numel() - 1) // trees
        n = est.centers_.shape[0] if est.centers_.dim() == 2 else -1
        if (offsets.dim() != 1 or leaves < 1 or leaves & (leaves - 1) or leaves * trees != offsets.numel() - 1
                or est.centers_.shape != (n, d) or est.weights_.shape != (n, est.n_outputs_)
                or est.split_directions_.shape != (trees * (leaves - 1), d)
                or est.split_thresholds_.shape != (trees * (leaves - 1),)
                or int(offsets[0]) != 0 or int(offsets[-1]) != n
                or bool((offsets[1:] < offsets[:-1]).any())):  # fmt: skip
            raise SpeechkernError("local kernel model state: the trees, leaf offsets and centres do not agree")
        m = est.global_centers_.shape[0] if est.global_centers_.dim() == 2 else -1
        if est.global_centers_.shape != (m, d) or est.global_weights_.shape != (m, est.n_outputs_):
            shapes = f"{tuple(est.global_centers_.shape)} and {tuple(est.global_weights_.shape)}"
            raise _damaged(f"the global centres and weights {shapes} do not fit {d} features, {est.n_outputs_} outputs")
        return est

    def save(self, path, overwrite: bool = False):
        """Write the model to one safetensors file, atomically (see :meth:`EigenProRegressor.save`)."""
        from speechkern.eigenpro import state

        return state.save(self, path, overwrite)

    @classmethod
    def load(cls, path, device: str | None = None) -> LocalKernelRegressor:
        """Read a model written by :meth:`save` (no code from the file is run)."""
        from speechkern.eigenpro import state

        return state.load(cls, path, device)


def _damaged(what: str) -> SpeechkernError:
    return SpeechkernError(f"local kernel model state: {what}")


def _whole(value: Any, name: str, least: int) -> int:
    """A configuration entry that must be a whole number ≥ ``least`` (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _damaged(f"{name} is {value!r}, expected a whole number ≥ {least}")
    return value


def solve_leaf(
    X: torch.Tensor | np.ndarray,
    Y: torch.Tensor | np.ndarray,
    start: int,
    stop: int,
    keep: np.ndarray | None = None,
    *,
    shape: float,
    bandwidth: float,
    ridge: float,
    centers_dtype: str = "float32",
    device: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (m × features) and weights (m × outputs), float32, of the leaf of rows ``start:stop`` of X
    (n × features) and Y (n × outputs): every row a centre, w = (K + λI)⁻¹·Y
    (:func:`~speechkern.eigenpro.exact.ridge_solve`); or, with ``keep`` (sorted row numbers within the leaf), those
    rows as centres fitted to all the leaf's rows (:func:`~speechkern.eigenpro.exact.nystrom_solve`). The kernel is
    exp(−‖x − z‖^γ/σ) with γ = ``shape``, σ = ``bandwidth``; the centres are rounded through ``centers_dtype``
    first. One leaf's work in :meth:`LocalKernelRegressor.fit`, made of plain arguments so that an executor can
    run it as a task: tensors are used on their device, NumPy arrays (a task's) are copied to ``device`` and the
    result comes back on the CPU. Raises :class:`~speechkern.errors.SpeechkernError` as the solvers do.
    """
    remote = isinstance(X, np.ndarray)
    if remote:
        dev = resolve_device(device)
        X, Y = (torch.from_numpy(np.array(A[start:stop], dtype=np.float32)).to(dev) for A in (X, Y))
    else:
        X, Y = X[start:stop], Y[start:stop]
    kernel = ExponentialPowerKernel(shape, bandwidth)
    rounded = CENTERS_DTYPES[centers_dtype]
    if keep is not None:
        Z = X[torch.from_numpy(np.asarray(keep)).to(X.device)].to(rounded).to(torch.float32)
        w = nystrom_solve(kernel, X, Y, Z, float(ridge))
    else:
        Z = X.to(rounded).to(torch.float32)
        w = ridge_solve(kernel, Z, Y, float(ridge)) if len(X) else Y
    return (Z.cpu(), w.cpu()) if remote else (Z, w)


def predict_local(estimators: list[LocalKernelRegressor], X: torch.Tensor) -> list[torch.Tensor]:
    """Predictions (n × outputs each) of local machines that share their trees and centres (the subband models
    of one training set): X is routed once per tree and each block's squared distances to its leaf's centres are
    computed once for all of them (each applies its own kernel, weights and soft-routing temperature); with
    several trees, the mean of the trees' predictions."""
    first = estimators[0]
    X = X.to(device=first.centers_.device, dtype=torch.float32)
    total = None
    for tree in range(first.n_trees_):
        leaves, second, margin = _route_tree(first, tree, X)
        weights = [second_leaf_weight(margin, float(e.temperature_)) for e in estimators]
        outs = _leaf_predictions(estimators, X, leaves)
        near = torch.zeros(X.shape[0], dtype=torch.bool, device=X.device)
        for w in weights:
            near |= w > NEGLIGIBLE_WEIGHT
        rows = torch.nonzero(near & (second != leaves)).squeeze(1)
        if rows.numel():
            others = _leaf_predictions(estimators, X[rows], second[rows])
            for out, other, w in zip(outs, others, weights, strict=True):
                w = w[rows].unsqueeze(1)
                out[rows] = out[rows] * (1 - w) + other * w
        total = outs if total is None else [a + b for a, b in zip(total, outs, strict=True)]
    if first.n_trees_ > 1:
        total = [out / first.n_trees_ for out in total]
    if len(first.global_centers_):
        total = [a + b for a, b in zip(total, predict_global(estimators, X), strict=True)]
    return total


def predict_global(estimators: list[LocalKernelRegressor], X: torch.Tensor) -> list[torch.Tensor]:
    """Each estimator's global machine at X (n × outputs; zeros without one), the distances to the shared global
    centres computed once for all of them."""
    first = estimators[0]
    X = X.to(device=first.global_centers_.device, dtype=torch.float32)
    if not len(first.global_centers_):
        return [torch.zeros(X.shape[0], e.n_outputs_, dtype=torch.float32, device=X.device) for e in estimators]
    if getattr(first, "_global_cache", None) is None:
        first._global_cache = prepare_points(first.global_centers_)
    with torch.no_grad():
        return shared_center_products(X, first._global_cache, [e.kernel_ for e in estimators],
                                      [e.global_weights_ for e in estimators])  # fmt: skip


def _route_tree(est: LocalKernelRegressor, tree: int, X: torch.Tensor):
    """:func:`route_soft` in tree number ``tree`` of ``est``, its leaves numbered as in ``leaf_offsets_``."""
    leaves = est.n_leaves_
    nodes = leaves - 1
    lo, hi = tree * nodes, (tree + 1) * nodes
    first, second, margin = route_soft(X, est.split_directions_[lo:hi], est.split_thresholds_[lo:hi])
    return first + tree * leaves, second + tree * leaves, margin


def _leaf_predictions(estimators: list[LocalKernelRegressor], X: torch.Tensor, leaves: torch.Tensor):
    """Each estimator's machine of leaf ``leaves[i]`` at row i of X: per leaf, one distance product per row block
    shared by every estimator (:func:`~speechkern.kernels.shared_center_products`, the EigenPro subbands' path)."""
    first = estimators[0]
    offsets = first.leaf_offsets_
    prepared = _prepared_leaves(first)
    outs = [torch.zeros(X.shape[0], e.n_outputs_, dtype=torch.float32, device=X.device) for e in estimators]
    kernels = [e.kernel_ for e in estimators]
    with torch.no_grad():
        for j in torch.unique(leaves).tolist():
            a, b = int(offsets[j]), int(offsets[j + 1])
            if b == a:
                continue
            rows = torch.nonzero(leaves == j).squeeze(1)
            preds = shared_center_products(X[rows], prepared[j], kernels, [e.weights_[a:b] for e in estimators])
            for out, pred in zip(outs, preds, strict=True):
                out[rows] = pred
    return outs


def _prepared_leaves(est: LocalKernelRegressor) -> list:
    """Each leaf's centres prepared for distance products (:func:`~speechkern.kernels.prepare_points`), kept on
    the estimator (``fit`` clears them)."""
    if getattr(est, "_leaf_cache", None) is None:
        offsets = est.leaf_offsets_
        est._leaf_cache = [prepare_points(est.centers_[int(offsets[j]) : int(offsets[j + 1])])
                           if offsets[j + 1] > offsets[j] else None for j in range(offsets.numel() - 1)]  # fmt: skip
    return est._leaf_cache


def same_partition(a: LocalKernelRegressor, b: LocalKernelRegressor) -> bool:
    """Whether two fitted local machines share their centres and tree (so :func:`predict_local` may group them)."""
    same_leaves = a.centers_ is b.centers_ or (
        a.centers_.shape == b.centers_.shape
        and torch.equal(a.leaf_offsets_, b.leaf_offsets_)
        and torch.equal(a.split_thresholds_, b.split_thresholds_)
        and torch.equal(a.centers_, b.centers_)
    )
    return same_leaves and (
        a.global_centers_ is b.global_centers_
        or (a.global_centers_.shape == b.global_centers_.shape and torch.equal(a.global_centers_, b.global_centers_))
    )
