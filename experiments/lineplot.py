"""Kept for the experiment scripts: the plot lives in :mod:`jflow.plots`."""
from jflow.plots import line_plot  # noqa: F401
