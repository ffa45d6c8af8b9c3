"""PIL plots: the bar chart that experiments/vs_torch.py draws."""
import numpy as np
from PIL import Image

from jflow.plots import COLORS, bar_plot


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
