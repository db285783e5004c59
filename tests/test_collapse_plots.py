"""The collapse figures: legends describe what each panel draws, empty series are left out, x-ordered points."""

from __future__ import annotations

import math

import numpy as np

from speechkern.collapse.plots import (
    nc_over_time_figure,
    over_time_figure,
    plot_transfer,
    train_sizes_figure,
    transfer_figure,
)

NC_KEYS = (
    "nc1_train",
    "nc1_test",
    "nc2_equinorm_means",
    "nc2_equinorm_classifier",
    "nc2_equiangular_means",
    "nc2_equiangular_classifier",
    "nc2_maxangle_means",
    "nc2_maxangle_classifier",
    "nc3",
    "nc4_agreement",
)


def over_time_rows(sizes=(40, 80), epochs=(0, 1, 3, 10), missing: tuple[str, ...] = ()) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        for epoch in epochs:
            row = {"train_size": size, "epoch": epoch}
            for key in (*NC_KEYS, "train_variance", "strong_test_variance", "weak_test_variance"):
                row[key] = None if key in missing else float(rng.uniform(0.01, 1.0))
            row["train_error"], row["test_error"] = 0.1, 0.2
            rows.append(row)
    return rows


def legend_entries(legend) -> dict[str, str]:
    """Legend label → line style of its handle."""
    return {
        text.get_text(): handle.get_linestyle()
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }


def test_nc2_panels_have_a_legend_of_their_own_line_styles() -> None:
    fig = nc_over_time_figure(over_time_rows())
    axes = fig.axes
    titles = [ax.get_title() for ax in axes]
    for ax, title in zip(axes, titles, strict=True):
        if not title.startswith("NC2"):
            continue
        entries = legend_entries(ax.get_legend())
        assert entries == {"means": "-", "classifier": "--"}, title
        assert {line.get_linestyle() for line in ax.get_lines()} == set(entries.values())
    nc1 = axes[titles.index("NC1: tr(Σ_W Σ_B⁺)/C")]
    assert legend_entries(nc1.get_legend()) == {"train": "-", "test": "--"}
    # colour (train size) is explained once, for the whole figure
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["train size 40", "train size 80"]


def test_empty_series_are_neither_drawn_nor_listed() -> None:
    fig = nc_over_time_figure(over_time_rows(missing=("nc1_test", "nc2_equinorm_classifier")))
    titles = [ax.get_title() for ax in fig.axes]
    nc1 = fig.axes[titles.index("NC1: tr(Σ_W Σ_B⁺)/C")]
    assert legend_entries(nc1.get_legend()) == {"train": "-"}
    assert len(nc1.get_lines()) == 2  # the train series of each size, no empty test lines
    equinorm = fig.axes[titles.index("NC2 equinorm (CV of norms)")]
    assert legend_entries(equinorm.get_legend()) == {"means": "-"}

    top = over_time_figure(over_time_rows(missing=("weak_test_variance",))).axes[0]
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert labels == ["TrainVariance", "StrongTestVariance"]

    sizes = train_sizes_figure(
        [
            {"train_size": n, "train_variance": 0.1, "strong_test_variance": 0.2, "weak_test_variance": None,
             "test_error": 0.1, "train_error": 0.0}
            for n in (50, 100)
        ]
    )  # fmt: skip
    assert "WeakTestVariance" not in [t.get_text() for t in sizes.axes[0].get_legend().get_texts()]


def transfer_rows() -> list[dict]:
    # coarse collapse is not monotone in the epoch: a later epoch can be less collapsed
    coarse = [0.9, 0.2, 0.5, 0.05, 0.1]
    return [
        {
            "pretrain_epoch": epoch,
            "coarse_train_variance": c,
            "coarse_test_variance": c * 2,
            "fine_within_coarse_variance": 1.0 - c,
            "probe_test_error": 0.1 + c / 10,
            "finetune_test_error": 0.05 + c / 20,
            "coarse_test_error": 0.01,
        }
        for epoch, c in zip((0, 1, 3, 10, 30), coarse, strict=True)
    ]


def test_transfer_points_are_ordered_along_the_x_axis() -> None:
    fig = transfer_figure(transfer_rows())
    left, middle, right = fig.axes[:3]
    for ax in (left, middle, right):
        assert ax.get_lines()
        for line in ax.get_lines():
            x = np.asarray(line.get_xdata(), dtype=float)
            assert np.all(np.diff(x) > 0), (ax.get_title(), x)
    probe = right.get_lines()[0]
    # each point keeps its own y value: probe error 0.1 + c/10 at coarse variance c
    np.testing.assert_allclose(probe.get_ydata(), 0.1 + np.asarray(probe.get_xdata()) / 10)
    assert plot_transfer(transfer_rows()).startswith(b"\x89PNG")


def test_transfer_without_fine_tuning_lists_no_fine_tune() -> None:
    rows = [{**row, "finetune_test_error": None} for row in transfer_rows()]
    fig = transfer_figure(rows)
    for ax in fig.axes[1:3]:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "full fine-tune" not in labels and "linear probe" in labels
    assert all(math.isfinite(v) for line in fig.axes[2].get_lines() for v in line.get_ydata())
