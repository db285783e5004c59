"""Which solver fits a problem (docs/engine.md, "Choosing the solver"). By default ("auto") the local machine:
every frame a centre, leaves of a median-split tree solved exactly (one leaf, the global exact solve, when the
frames fit). On request the exact solve, or EigenPro 2 while every frame as a centre fits the memory and work
budgets, else EigenPro 3 with as many centres as they allow."""

from __future__ import annotations

from dataclasses import dataclass

from speechkern.errors import SpeechkernError

SOLVERS = ("auto", "local", "exact", "eigenpro", "eigenpro2", "eigenpro3")
# Multiply-adds one kernel-matrix build may take: n·p·features (the distance product dominates). 1.5·10¹² is
# about 1–2 minutes on 2 CPU cores; EigenPro 2 (p = n) is kept below it, so it is chosen up to ~35 000 frames of
# 1230 features.
MAX_BUILD_WORK = 1.5e12
# EigenPro 3 may spend more on its one build (it replaces many epochs of a smaller model): 4·10¹².
MAX_CENTRES_BUILD_WORK = 4e12
MAX_CENTRES = 10_000  # beyond this the projection (p² per output and batch) dominates the epochs on 2 cores
MIN_CENTRES = 1_000
# Bytes per entry of K(X, Z): float16 kernel values (EigenProRegressor's kernel_dtype) plus the float16 distances
# kept for the next subband's fit (one distance product for all subbands).
STORAGE_BYTES = 4
BUDGET_SHARE = 0.8  # of the memory budget for the kernel matrices; the rest for batches and set-up buffers
# Largest leaf of the local machine where the frames do not fit one exact solve: K of 20 000 points is 1.5 GiB in
# float32 and factorises in about 20 s on 2 cores; larger leaves were no better per minute on every frame
# (benchmarks/RESULTS.md, "Kernel machines against the DNN with the solved-kernel default").
DEFAULT_LEAF_SIZE = 20_000
# Trees the local machine averages by default while its tree has at most AUTO_TREES_MAX_LEAVES leaves: at 40 000
# frames three trees of two leaves came within 0.7 % of the exact solve (one tree: 1.9 %); deeper trees keep one
# by default, since their leaf solves already take minutes (benchmarks/RESULTS.md, "Averaged
# trees": every frame, three trees, −2.3 % for three times 3 minutes per subband).
AUTO_TREES = 3
AUTO_TREES_MAX_LEAVES = 8
# Centres of the global machine the local solver fits under its leaves by default wherever it has more than one
# leaf (kernel.global_centers = "auto"): on every frame of the scaling benchmark 4000 cost 2.5 minutes (quiet
# machine) and lowered validation MSE by 2 % (benchmarks/RESULTS.md, "A global machine under the leaves").
AUTO_GLOBAL_CENTERS = 4000


@dataclass(frozen=True)
class SolverChoice:
    """``solver`` ("local", "eigenpro2" or "eigenpro3"; an exact solve is a local machine of one leaf),
    ``centers`` (p for EigenPro 3, None otherwise), ``leaf_size`` (the local machine's largest leaf, else None),
    ``trees`` (the local machine's averaged trees), ``global_centers`` (its global machine's, 0 for none) and a
    sentence saying why, for the log."""

    solver: str
    centers: int | None
    reason: str
    leaf_size: int | None = None
    trees: int = 1
    global_centers: int = 0

    @property
    def estimator_centers(self) -> int | None:
        """The ``centers`` argument of :class:`~speechkern.eigenpro.EigenProRegressor`."""
        return self.centers


def choose_solver(
    n: int,
    n_val: int,
    features: int,
    budget_bytes: int,
    solver: str = "auto",
    centers: int = 0,
    leaf_size: int = 0,
    leaf_centers: int = 0,
    trees: int = 0,
    global_centers: int | str = "auto",
    global_frames: int | None = None,
) -> SolverChoice:
    """Pick the solver for n training frames (n_val validation frames) of ``features`` inputs under a memory
    budget of ``budget_bytes``.

    ``solver`` "auto" or "local": the local machine with leaves of at most ``leaf_size`` frames (0: one leaf, the
    exact solve of all n frames, where n ≤ :data:`~speechkern.eigenpro.exact.MAX_EXACT_POINTS` and its float32
    kernel matrix fits the budget; else the largest leaf whose matrix fits 80 % of the budget, at most
    :data:`DEFAULT_LEAF_SIZE`); "exact": one leaf
    of all n frames (refused in one line beyond :data:`~speechkern.eigenpro.exact.MAX_EXACT_POINTS` or the
    budget); "auto" with ``centers`` > 0 means EigenPro 3 with that many centres. ``leaf_centers`` > 0 (the
    local solver's compact leaves) is named in the reason. ``trees``: the local machine's averaged trees, 0 (the
    default) for :data:`AUTO_TREES` where the tree has 2 to :data:`AUTO_TREES_MAX_LEAVES` leaves, else 1 (one
    leaf: always 1). ``global_centers``: the local machine's global machine (its leaves fit the residuals), "auto"
    for :data:`AUTO_GLOBAL_CENTERS` (at most n) wherever there is more than one leaf; none with one leaf;
    ``global_frames`` (default :data:`~speechkern.eigenpro.local.DEFAULT_GLOBAL_FRAMES`, 0 every frame): the frames
    it is fitted to, named in the reason.
    ``solver`` "eigenpro": EigenPro 2 (every frame a centre) when its float16 kernel matrix K(X, X) (and K(X_val,
    X)), with the float16 distances shared by the subbands, fits 80 % of the budget and one build costs at most
    :data:`MAX_BUILD_WORK` multiply-adds; otherwise EigenPro 3 with p centres, the largest p ≤ :data:`MAX_CENTRES`
    whose float16 K(X, Z), K(X_val, Z), their float16 distances and float64 Cholesky factors fit 80 % of the budget
    and whose build costs at most :data:`MAX_CENTRES_BUILD_WORK`. ``centers`` > 0 fixes p (EigenPro 3 unless p ≥ n).
    "eigenpro2" and "eigenpro3" force the iteration. Raises :class:`~speechkern.errors.SpeechkernError` for an
    unknown solver.
    """
    if solver not in SOLVERS:
        raise SpeechkernError(f"kernel.solver={solver!r}: expected one of {', '.join(SOLVERS)}")
    from speechkern.eigenpro.local import DEFAULT_GLOBAL_FRAMES, check_global_centers, global_fit_frames

    global_frames = DEFAULT_GLOBAL_FRAMES if global_frames is None else int(global_frames)

    if global_centers != "auto":
        check_global_centers(global_centers, name="kernel.global_centers")
    n, n_val, features = int(n), int(n_val), max(1, int(features))
    room = BUDGET_SHARE * budget_bytes
    gib = 2**30
    if solver == "exact":
        from speechkern.eigenpro.exact import check_exact_size

        check_exact_size(n, budget_bytes)
        return SolverChoice("local", None, f"the exact ridge solve of all {n} frames (as asked)", max(1, n))
    if solver == "local" or (solver == "auto" and not centers):
        from speechkern.eigenpro.exact import MAX_EXACT_POINTS, exact_bytes
        from speechkern.eigenpro.local import tree_depth

        fits = int((room / 4) ** 0.5)
        # the statistical best where it fits: one exact solve of every frame (its K is all it holds at its peak)
        whole = n <= MAX_EXACT_POINTS and exact_bytes(n) <= budget_bytes
        leaf = int(leaf_size) if leaf_size else (n if whole else min(DEFAULT_LEAF_SIZE, fits))
        leaf = max(1, min(leaf, MAX_EXACT_POINTS))
        leaves = 2 ** tree_depth(n, leaf)
        what = (
            "the exact ridge solve of all {n} frames (one leaf)"
            if leaves == 1
            else f"a local machine: {leaves} leaves of about {-(-n // leaves)} frames, each solved exactly"
        )
        if leaf_centers and leaf_centers < -(-n // leaves):
            what += f", keeping {leaf_centers} centres per leaf (the Nyström form over all its frames)"
        if leaves == 1:
            trees = 1
        elif not trees:
            # one tree per principal direction at most: inputs of fewer features have fewer distinct trees
            trees = min(AUTO_TREES, features) if leaves <= AUTO_TREES_MAX_LEAVES else 1
        if trees > 1:
            what += f"; the mean of {trees} such trees, each cut along a further principal direction"
        glob = 0 if leaves == 1 else min(n, AUTO_GLOBAL_CENTERS if global_centers == "auto" else int(global_centers))
        if global_centers == "auto":  # as many as the budget holds, up to AUTO_GLOBAL_CENTERS
            glob = min(glob, largest_global_centers(budget_bytes))
        check_global_centers(glob, budget_bytes, "kernel.global_centers", "kernel.memory_gb")
        if glob:
            drawn = global_fit_frames(n, glob, global_frames)
            fitted = "every frame" if drawn == n else f"{drawn} of the frames"
            what += f"; under them a global machine of {glob} centres, fitted to {fitted}"
        if leaf_size:
            why = "leaf size as asked"
        elif whole:
            why = f"every frame fits one exact solve ({exact_bytes(n) / gib:.1f} of {budget_bytes / gib:.1f} GiB)"
        else:
            why = (
                f"leaves of at most {leaf} frames ({'the memory budget' if leaf == fits else 'the default'}: "
                f"{4 * leaf * leaf / gib:.1f} GiB of the {budget_bytes / gib:.1f} GiB budget per leaf)"
            )
        return SolverChoice("local", None, f"{what.format(n=n)}; {why}", leaf, trees, glob)  # fmt: skip
    if solver == "eigenpro2" or (centers and centers >= n):
        why = "as asked" if solver == "eigenpro2" else f"kernel.centers = {centers} asks for at least as many"
        return SolverChoice("eigenpro2", None, f"EigenPro 2 with every one of {n} frames as a centre ({why})")
    if centers:
        p = min(int(centers), n)
        return SolverChoice("eigenpro3", p, f"EigenPro 3 with {p} centres (as asked), learning from all {n} frames")
    ep2_bytes = STORAGE_BYTES * (n + n_val) * n
    ep2_work = float(n) * n * features
    if solver == "eigenpro" and ep2_bytes <= room and ep2_work <= MAX_BUILD_WORK:
        return SolverChoice(
            "eigenpro2",
            None,
            f"EigenPro 2 with every one of {n} frames as a centre: K(X, X) takes {ep2_bytes / gib:.1f} GiB of the "
            f"{budget_bytes / gib:.1f} GiB budget and {ep2_work:.2g} multiply-adds to build",
        )
    p_memory = _largest_p(n + n_val, room)
    p_work = int(MAX_CENTRES_BUILD_WORK // (n * features)) if n else MAX_CENTRES
    most = max(1, n // 2) if solver == "eigenpro3" else n  # forced: fewer centres than frames
    p = max(1, min(MAX_CENTRES, most, p_memory, max(p_work, MIN_CENTRES)))
    limit = min(
        (MAX_CENTRES, "the cap on centres"),
        (p_memory, "the memory budget"),
        (max(p_work, MIN_CENTRES), "the build-work budget"),
    )[1]
    why = (
        f"EigenPro 2 would need {ep2_bytes / gib:.1f} GiB (budget {budget_bytes / gib:.1f} GiB) and {ep2_work:.2g} "
        "multiply-adds per build"
        if solver == "eigenpro"
        else "as asked"
    )
    return SolverChoice(
        "eigenpro3", p, f"EigenPro 3 with {p} centres ({limit} sets p) learning from all {n} frames: {why}"
    )


def largest_global_centers(budget_bytes: int) -> int:
    """The most centres whose global machine (:func:`~speechkern.eigenpro.exact.nystrom_bytes`) fits the budget."""
    from speechkern.eigenpro.exact import NYSTROM_BLOCK, nystrom_bytes

    m = _largest_root(24.0, 12.0 * NYSTROM_BLOCK, budget_bytes)
    while m and nystrom_bytes(m) > budget_bytes:  # float rounding
        m -= 1
    return m


def _largest_p(rows: int, room: float) -> int:
    """Largest p with STORAGE_BYTES·rows·p + 20·p² ≤ room (K and distances, two float64 p × p factors and a
    float32 copy of the centres' block)."""
    return max(1, _largest_root(20.0, float(STORAGE_BYTES * rows), room))


def _largest_root(a: float, b: float, room: float) -> int:
    """The largest whole x ≥ 0 with a·x² + b·x ≤ room (a, b > 0): bytes quadratic in a count of centres."""
    return max(0, int((-b + (b * b + 4 * a * max(0.0, room)) ** 0.5) / (2 * a)))
