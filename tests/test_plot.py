"""Tests of backdoorlab.plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from backdoorlab import plot


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_image_grid_lays_out_images_with_labels():
    fig = plot.image_grid(torch.rand(5, 1, 8, 8), labels=list("abcde"), ncols=3)
    assert len(fig.axes) == 5
    assert [ax.get_xlabel() for ax in fig.axes] == list("abcde")
    assert fig.axes[0].images[0].get_array().shape == (8, 8)


def test_image_grid_shows_colour_images_in_colour():
    fig = plot.image_grid(torch.rand(2, 3, 8, 8))
    assert fig.axes[0].images[0].get_array().shape == (8, 8, 3)


def test_image_grid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        plot.image_grid(torch.rand(8, 8))
    with pytest.raises(ValueError, match="labels"):
        plot.image_grid(torch.rand(2, 1, 8, 8), labels=["only one"])


def test_heatmaps_centre_the_colour_scale_at_zero():
    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 0, 0] = 3.0
    maps[0, 0, 1, 1] = -1.0
    image = plot.heatmaps(maps).axes[0].images[0]
    assert image.get_clim() == (-3.0, 3.0)


def test_curves_label_axes_and_check_lengths():
    fig = plot.curves([1, 2, 4], {"a": [1, 2, 3], "b": [3, 2, 1]}, xlabel="rate", ylabel="accuracy", xscale="log",
                      errors={"a": [0.1, 0.1, 0.1]})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "rate" and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    with pytest.raises(ValueError, match="shape"):
        plot.curves([1, 2], {"a": [1, 2, 3]}, xlabel="x", ylabel="y")


def test_roc_curves_draw_each_detector_and_the_diagonal():
    fig = plot.roc_curves({"ulp": (np.array([0, 0.2, 1]), np.array([0, 0.9, 1])), "noise": ([0, 1], [0, 1])})
    assert len(fig.axes[0].lines) == 3
