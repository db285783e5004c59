"""The exponential power kernel: values, blocked products, float32 accuracy near coincident points, KeOps;
squared distances, their transform, the distance cache and gathered products (the precomputed mode)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from speechkern.errors import SpeechkernError
from speechkern.kernels import (
    DistanceCache,
    ExponentialPowerKernel,
    PreparedPoints,
    cached_squared_distances,
    clear_distance_cache,
    content_key,
    distance_cache_info,
    distance_matrix16,
    gathered_mm,
    keops_available,
    kernel_matrix,
    prepare_points,
    shared_center_products,
    squared_distances,
    transposed_mm,
)


def reference(X: torch.Tensor, Z: torch.Tensor, shape: float, bandwidth: float) -> torch.Tensor:
    """k(x, z) = exp(−‖x − z‖^γ/σ) from explicit differences, in float64."""
    d = (X.double()[:, None, :] - Z.double()[None, :, :]).square().sum(-1).sqrt()
    return torch.exp(-(d**shape) / bandwidth)


@pytest.fixture
def points() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(70, 6, generator=g, dtype=torch.float64)
    Z = torch.randn(50, 6, generator=g, dtype=torch.float64)
    W = torch.randn(50, 3, generator=g, dtype=torch.float64)
    return X, Z, W


@pytest.mark.parametrize("shape", [0.5, 0.75, 1.0, 1.5, 2.0])
def test_dense_block_and_product_match_the_definition(points, shape):
    X, Z, W = points
    kernel = ExponentialPowerKernel(shape, 2.5)
    expected = reference(X, Z, shape, 2.5)
    torch.testing.assert_close(kernel(X, Z), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(kernel.mm(X, Z, W), expected @ W, rtol=1e-10, atol=1e-10)
    # float32: agreement to single precision
    got32 = kernel.mm(X.float(), Z.float(), W.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected @ W, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block_size", [60, 500, None])
def test_blocked_product_equals_the_dense_product(points, block_size):
    X, Z, W = points
    kernel = ExponentialPowerKernel(0.75, 3.0)
    expected = kernel(X, Z) @ W
    torch.testing.assert_close(kernel.mm(X, Z, W, block_size=block_size), expected, rtol=1e-12, atol=1e-12)


def test_product_shapes_out_argument_and_empty_inputs(points):
    X, Z, W = points
    kernel = ExponentialPowerKernel(1.0, 2.0)
    vector = kernel.mm(X, Z, W[:, 0])
    assert vector.shape == (70,)
    torch.testing.assert_close(vector, kernel(X, Z) @ W[:, 0])
    out = torch.full((70, 6), float("nan"), dtype=torch.float64)[:, ::2]  # non-contiguous
    result = kernel.mm(X, Z, W, out=out)
    assert result.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, kernel(X, Z) @ W)
    assert kernel.mm(X[:0], Z, W).shape == (0, 3)
    assert torch.equal(kernel.mm(X, Z[:0], W[:0]), torch.zeros(70, 3, dtype=torch.float64))
    assert kernel(X, Z[:0]).shape == (70, 0)
    # NumPy arrays are accepted too
    np.testing.assert_allclose(kernel.mm(X.numpy(), Z.numpy(), W.numpy()).numpy(), (kernel(X, Z) @ W).numpy())


def test_large_blocks_split_over_worker_threads_match_the_definition():
    """Dense blocks and products big enough to be shared out among the CPU worker threads (row and column splits)."""
    before = torch.get_num_threads()
    g = torch.Generator().manual_seed(3)
    X, Z = torch.randn(2500, 8, generator=g), torch.randn(600, 8, generator=g)  # no near-coincident pairs
    W = torch.randn(600, 2, generator=g)
    kernel = ExponentialPowerKernel(0.75, 2.0)
    expected = reference(X, Z, 0.75, 2.0)
    torch.testing.assert_close(kernel(X, Z).double(), expected, rtol=1e-4, atol=1e-5)  # 2 row blocks
    torch.testing.assert_close(kernel.mm(X, Z, W).double(), expected @ W.double(), rtol=1e-4, atol=1e-4)
    few_rows = kernel.mm(X[:5], Z, W, block_size=500)  # one row block, many column tiles
    torch.testing.assert_close(few_rows.double(), expected[:5] @ W.double(), rtol=1e-4, atol=1e-4)
    assert torch.get_num_threads() == before  # the workers restore torch's thread count


def test_prepared_points_give_the_same_products(points):
    X, Z, W = points
    kernel = ExponentialPowerKernel(0.5, 1.5)
    prepared = kernel.prepare(Z)
    assert isinstance(prepared, PreparedPoints) and prepared.size == 50
    torch.testing.assert_close(kernel.mm(X, prepared, W), kernel.mm(X, Z, W), rtol=0, atol=0)
    torch.testing.assert_close(kernel(X, prepared), kernel(X, Z), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [0.5, 1.0, 2.0])
def test_float32_self_distances_are_exact_even_for_offset_features(shape):
    """The product form cancels for coincident points; the kernel still gives k(x, x) = 1 exactly."""
    g = torch.Generator().manual_seed(1)
    X = (torch.randn(300, 64, generator=g) + 40).float()  # un-centred features, large norms
    bandwidth = 2.0 * float(torch.cdist(X[:50].double(), X[50:100].double()).pow(shape).median())
    kernel = ExponentialPowerKernel(shape, bandwidth)
    K = kernel(X, X)
    assert torch.equal(K.diagonal(), torch.ones(300))
    expected = reference(X, X, shape, bandwidth)
    torch.testing.assert_close(K.double(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(K, K.T, rtol=1e-5, atol=1e-6)
    # the blocked product sees the same exact diagonal: K·e_i has 1 in row i
    torch.testing.assert_close(kernel.mm(X, X, torch.eye(300), block_size=30_000), K, rtol=1e-6, atol=1e-7)


def test_max_diagonal_diag_and_config_round_trip():
    kernel = ExponentialPowerKernel(0.75, 12.0, backend="torch")
    assert kernel.max_diagonal == 1.0
    assert torch.equal(kernel.diag(torch.zeros(4, 2)), torch.ones(4))
    again = ExponentialPowerKernel.from_config(kernel.to_config())
    assert again == kernel and again.shape == 0.75 and again.bandwidth == 12.0
    assert kernel.resolve_backend("cpu") == "torch"
    assert ExponentialPowerKernel().resolve_backend("cpu") == "torch"  # auto on the CPU


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": 0.0}, "shape"),
        ({"shape": 2.5}, "shape"),
        ({"bandwidth": 0.0}, "bandwidth"),
        ({"bandwidth": float("inf")}, "bandwidth"),
        ({"backend": "cuda"}, "backend"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, message):
    with pytest.raises(SpeechkernError, match=message):
        ExponentialPowerKernel(**kwargs)


def test_mismatched_inputs_are_rejected(points):
    X, Z, W = points
    kernel = ExponentialPowerKernel()
    with pytest.raises(SpeechkernError, match="features"):
        kernel(X, Z[:, :3])
    with pytest.raises(SpeechkernError, match="W has shape"):
        kernel.mm(X, Z, W[:10])
    with pytest.raises(SpeechkernError, match="block_size"):
        kernel.mm(X, Z, W, block_size=0)


def test_keops_backend_agrees_with_torch():
    if not keops_available():
        pytest.skip("pykeops does not import here")
    g = torch.Generator().manual_seed(2)
    X, Z, W = torch.randn(40, 3, generator=g), torch.randn(30, 3, generator=g), torch.randn(30, 2, generator=g)
    torch_kernel = ExponentialPowerKernel(0.75, 1.5, backend="torch")
    try:
        got = ExponentialPowerKernel(0.75, 1.5, backend="keops").mm(X, Z, W)
        # a float exponent is a runtime parameter: another shape reuses the compiled formula
        got2 = ExponentialPowerKernel(0.6, 2.0, backend="keops").mm(X, Z, W)
    except Exception as exc:  # pragma: no cover - depends on the machine's compiler
        pytest.skip(f"pykeops cannot compile its formula here: {exc}")
    torch.testing.assert_close(got, torch_kernel.mm(X, Z, W), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got2, ExponentialPowerKernel(0.6, 2.0).mm(X, Z, W), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.double(), reference(X, Z, 0.75, 1.5) @ W.double(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Squared distances, their transform into kernel values, the distance cache and gathered products


@pytest.mark.parametrize("shape", [0.5, 1.0, 2.0])
def test_squared_distances_and_their_transform_equal_the_dense_block(shape):
    g = torch.Generator().manual_seed(4)
    X = torch.randn(1200, 20, generator=g) + 3.0  # several row blocks; un-centred
    Z = torch.randn(900, 20, generator=g)
    D = squared_distances(X, Z)
    assert D.shape == (1200, 900) and D.dtype == torch.float32 and bool((D >= 0).all())
    exact = (X.double()[:, None, :] - Z.double()[None, :, :]).square().sum(-1)
    torch.testing.assert_close(D.double(), exact, rtol=1e-4, atol=1e-3)
    kernel = ExponentialPowerKernel(shape, 7.0)
    dense = kernel(X, Z)
    before = D.clone()
    assert torch.equal(kernel.from_squared_distances(D), dense)  # the same numerics, bit for bit
    assert torch.equal(D, before)  # left untouched unless asked
    out = torch.empty_like(D)
    assert kernel.from_squared_distances(D, out=out) is out and torch.equal(out, dense)
    same = kernel.from_squared_distances(D, inplace=True)
    assert same.data_ptr() == D.data_ptr() and torch.equal(D, dense)
    # self-distances stay exactly 0, so k(x, x) = 1 as in the tiles
    assert torch.equal(kernel.from_squared_distances(squared_distances(X, X)).diagonal(), torch.ones(1200))
    with pytest.raises(SpeechkernError, match="out"):
        kernel.from_squared_distances(D, out=torch.empty(3, 3))
    with pytest.raises(SpeechkernError, match="out"):
        squared_distances(X, Z, out=torch.empty(3, 3))


def test_content_keys_tell_data_apart():
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = a.copy()
    assert content_key(a) == content_key(b) == content_key(torch.from_numpy(b))
    b[2, 1] += 1e-6
    assert content_key(a) != content_key(b)
    assert content_key(a) != content_key(a.reshape(3, 4))  # same bytes, another shape
    assert content_key(a) != content_key(a.astype(np.float64))
    assert content_key(a) != content_key(a, device="meta")


def test_distance_cache_hits_misses_and_bounds():
    cache = DistanceCache(max_entries=2)
    g = torch.Generator().manual_seed(5)
    X, Z = torch.randn(50, 4, generator=g), torch.randn(40, 4, generator=g)
    D, shared = cached_squared_distances(X, Z, max_cache_bytes=1 << 20, cache=cache)
    assert shared and cache.info().misses == 1 and cache.info().entries == 1
    again, shared = cached_squared_distances(X.clone(), Z.clone(), max_cache_bytes=1 << 20, cache=cache)
    assert shared and again is D and cache.info().hits == 1  # the same content, another tensor
    assert torch.equal(D, squared_distances(X, Z))  # what a fresh computation gives
    X2 = X.clone()
    X2[7, 2] += 1e-3  # one entry differs: never the same matrix
    other, _ = cached_squared_distances(X2, Z, max_cache_bytes=1 << 20, cache=cache)
    assert other is not D and cache.info().misses == 2
    torch.testing.assert_close(other, squared_distances(X2, Z), rtol=0, atol=0)
    # no room: computed, not kept, and the caller owns it
    own, shared = cached_squared_distances(Z, X, max_cache_bytes=100, cache=cache)
    assert not shared and cache.info().entries == 2
    # the entry limit drops the least recently used
    cached_squared_distances(X, X, max_cache_bytes=1 << 20, cache=cache)
    assert cache.info().entries == 2
    _, shared = cached_squared_distances(X, Z, max_cache_bytes=1 << 20, cache=cache)
    assert cache.info().misses == 5  # (X, Z) was the oldest and had been dropped
    # the byte allowance drops older entries to make room
    assert cache.put(("big",), torch.zeros(100, 100), max_bytes=40_000)
    assert cache.info().entries == 1 and cache.info().bytes == 40_000
    cache.clear()
    assert cache.info().entries == 0 and cache.info().bytes == 0


def test_distance_cache_is_thread_safe():
    cache = DistanceCache(max_entries=3)
    inputs = [torch.full((30, 3), float(i)) for i in range(6)]
    Z = torch.randn(20, 3, generator=torch.Generator().manual_seed(6))

    def work(i: int) -> bool:
        X = inputs[i % 6]
        D, _ = cached_squared_distances(X, Z, max_cache_bytes=1 << 20, cache=cache)
        return torch.equal(D, squared_distances(X, Z))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(work, range(60)))
    info = cache.info()
    assert info.hits + info.misses == 60 and info.entries <= 3


def test_global_cache_can_be_cleared():
    X = torch.randn(10, 2, generator=torch.Generator().manual_seed(7))
    cached_squared_distances(X, X, max_cache_bytes=1 << 20)
    assert distance_cache_info().entries >= 1
    clear_distance_cache()
    assert distance_cache_info().entries == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_gathered_products_equal_gather_then_product(workers):
    g = torch.Generator().manual_seed(8)
    K = torch.rand(3000, 700, generator=g)  # chunks of ~1500 rows
    W = torch.randn(700, 5, generator=g)
    rows = torch.randperm(3000, generator=g)[:2500]
    cols = torch.randperm(700, generator=g)[:90]
    pred, sub = gathered_mm(K, W, rows, cols, workers=workers)
    torch.testing.assert_close(pred, K[rows] @ W, rtol=1e-5, atol=1e-5)
    assert torch.equal(sub, K[rows][:, cols])
    whole, none = gathered_mm(K, W, workers=workers)
    assert none is None
    torch.testing.assert_close(whole, K @ W, rtol=1e-5, atol=1e-5)
    empty, _ = gathered_mm(K, W, rows[:0])
    assert empty.shape == (0, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernel_matrix_storage_and_products_in_reduced_precision(dtype):
    rng = np.random.default_rng(5)
    X = torch.from_numpy(rng.standard_normal((700, 9)).astype(np.float32))
    Z = torch.from_numpy(rng.standard_normal((90, 9)).astype(np.float32))
    W = torch.from_numpy(rng.standard_normal((90, 3)).astype(np.float32))
    R = torch.from_numpy(rng.standard_normal((700, 3)).astype(np.float32))
    kernel = ExponentialPowerKernel(1.0, 4.0)
    exact = kernel(X, Z)
    K = kernel_matrix(kernel, X, Z, dtype)
    assert K.dtype == dtype and K.shape == (700, 90)
    # storage rounding, plus for reduced precision the float16 distances' 2⁻¹¹·max(t·e⁻ᵗ) (t = ‖x − z‖^γ/σ)
    tolerance = {torch.float32: 0.0, torch.float16: 2.0**-11 + 2.0**-12, torch.bfloat16: 2.0**-8 + 2.0**-12}[dtype]
    assert float((K.float() - exact).abs().max()) <= tolerance
    if dtype != torch.float32:  # from shared float16 distances: the same matrix bit for bit
        distances = distance_matrix16(X, Z)
        assert distances.dtype == torch.float16
        torch.testing.assert_close(distances.float(), squared_distances(X, Z).sqrt(), rtol=2.0**-11, atol=1e-3)
        assert torch.equal(kernel_matrix(kernel, X, Z, dtype, distances), K)
    rows = torch.tensor([5, 3, 699, 0])
    columns = torch.tensor([1, 89])
    out, sub = gathered_mm(K, W, rows, columns)
    assert out.dtype == torch.float32 and sub.dtype == torch.float32
    torch.testing.assert_close(out, K[rows].float() @ W, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sub, K[rows][:, columns].float())
    torch.testing.assert_close(transposed_mm(K, R), K.float().T @ R, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_shared_center_products_equal_each_kernels_own_product(threads):
    """One distance product per row block shared by kernels of several shapes and bandwidths on the same centres
    (the subband models at enhance time) gives each kernel's own product; row counts off the block size too."""
    gen = torch.Generator().manual_seed(5)
    X, Z = torch.randn(3100, 40, generator=gen), torch.randn(700, 40, generator=gen)  # 3 row blocks
    kernels = [ExponentialPowerKernel(1.0, 6.0), ExponentialPowerKernel(1.0, 9.0), ExponentialPowerKernel(0.5, 2.0),
               ExponentialPowerKernel(2.0, 80.0)]  # fmt: skip
    weights = [torch.randn(700, k, generator=gen) for k in (3, 1, 4, 2)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = shared_center_products(X, prepare_points(Z), kernels, weights)
    finally:
        torch.set_num_threads(before)
    for kernel, w, g in zip(kernels, weights, got, strict=True):
        torch.testing.assert_close(g, kernel.mm(X, Z, w), rtol=1e-4, atol=1e-4 * float(w.abs().sum(0).max()))
    assert [tuple(g.shape) for g in shared_center_products(X[:0], Z, kernels, weights)] == [(0, 3), (0, 1), (0, 4),
                                                                                          (0, 2)]  # fmt: skip
    with pytest.raises(SpeechkernError, match="one each"):
        shared_center_products(X, Z, kernels, weights[:2])


def test_the_engine_imports_nothing_speech_side():
    """speechkern.kernels and the solvers import (at the top or inside functions) only each other and the shared
    helpers, never a speech-side module such as the array cache."""
    import ast
    from pathlib import Path

    import speechkern

    allowed = ("speechkern.kernels", "speechkern.eigenpro", "speechkern.errors", "speechkern.paths",
               "speechkern.device", "speechkern.outputs", "speechkern.progress", "speechkern.parallel",
               "speechkern.__version__")  # fmt: skip
    root = Path(speechkern.__file__).parent
    found = {}
    for path in [*(root / "kernels").glob("*.py"), *(root / "eigenpro").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):  # `from speechkern import cache` names the module speechkern.cache
                names += [f"speechkern.{a.name}" for a in node.names] if node.module == "speechkern" else [node.module]
            for name in names:
                if (name or "").startswith("speechkern") and not name.startswith(allowed):
                    found.setdefault(path.name, []).append(name)
    assert len(list((root / "kernels").glob("*.py"))) >= 5
    assert found == {}


def test_keops_compiles_under_the_speechkern_cache_folder(tmp_path, monkeypatch):
    """Without $KEOPS_CACHE_FOLDER, KeOps compiles into <$SPEECHKERN_CACHE>/keops (speechkern.paths)."""
    from speechkern.kernels import configure_keops_cache
    from speechkern.paths import default_cache_dir

    monkeypatch.setenv("KEOPS_CACHE_FOLDER", "unused")  # recorded, so the test's own value is restored afterwards
    monkeypatch.delenv("KEOPS_CACHE_FOLDER")
    monkeypatch.setenv("SPEECHKERN_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    assert configure_keops_cache() == str(tmp_path / "cache" / "keops")
    assert (tmp_path / "cache" / "keops").is_dir()
