"""PIL plots: the bar chart that experiments/vs_torch.py draws; line plots with gaps."""
import numpy as np
import pytest
from PIL import Image

from jflow.plots import COLORS, bar_plot, line_plot


def test_bar_plot_colours_bars_by_reference(tmp_path):
    path = tmp_path / "bars.png"
    bar_plot(str(path), ["fast", "slow", "missing"], [2.0, 0.5, float("nan")], title="t",
             ylabel="x", reference=1.5)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (90 + 34 * 3, 900, 3)

    def count(colour):
        return int(np.all(img == np.array(colour, np.uint8), axis=-1).sum())

    above, below = count(COLORS[0]), count(COLORS[3])
    assert above > 0 and below > 0
    assert 3 < above / below < 5  # bar lengths proportional to the values (2.0 vs 0.5)


def test_bar_plot_marks_a_bound_per_bar(tmp_path):
    def marked(marks):
        path = tmp_path / "marks.png"
        bar_plot(str(path), ["a", "b"], [1.0, 1.0], title="t", ylabel="x", marks=marks,
                 marks_label="bound")
        img = np.asarray(Image.open(path).convert("RGB"))
        return np.all(img == np.array(COLORS[1], np.uint8), axis=-1)

    none, one, two = marked(None), marked([3.0, None]), marked([3.0, 2.0])
    assert not none.any() and one.any()
    first_rows, first_cols = np.nonzero(one[64:, 300:])  # the first bar's tick (legend above)
    rows, cols = np.nonzero(two & ~one)  # what the second bar's tick adds
    assert rows.size > 0
    assert rows.min() > 64 + first_rows.max()  # in the second bar's row, below the first tick
    assert cols.max() < 300 + first_cols.min()  # at 2.0, left of the tick at 3.0
    with pytest.raises(ValueError, match="1 marks for 2 bars"):
        marked([3.0])


def test_line_plot_skips_missing_points(tmp_path):
    """A failed measurement (None) or NaN is a gap, not a crash; the other series still draw."""
    path = tmp_path / "lines.png"
    line_plot(str(path), [{"x": [0, 1, 2], "y": [3.0, None, float("nan")], "label": "gaps"},
                          {"x": [0, 1, 2], "y": [1.0, 2.0, 4.0], "label": "full"}],
              title="t", xlabel="x", ylabel="y", logy=True)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (560, 900, 3)
    assert np.all(img == np.array(COLORS[1], np.uint8), axis=-1).sum() > 50  # the full series
