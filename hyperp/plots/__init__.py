"""Paper figures of hyperp fits (PNG/SVG): each plot takes a fit result from `hyperp.fitting` and draws it.

`hyperp plot ...` (`hyperp.cli.plot`) runs the fit and the plot from a table. All figures share
`hyperp.plots.style`.
"""

from hyperp.plots.curves import curves_frame, plot_curves
from hyperp.plots.fits import plot_chinchilla, plot_compute, plot_law, plot_lr
from hyperp.plots.head import plot_head
from hyperp.plots.stability import indicator_columns, plot_stability, read_curves, stability_frame
from hyperp.plots.style import save_figure
from hyperp.plots.transfer import plot_transfer

__all__ = ["curves_frame", "indicator_columns", "plot_chinchilla", "plot_curves", "plot_compute", "plot_head", "plot_law", "plot_lr", "plot_stability", "plot_transfer",
           "read_curves", "save_figure", "stability_frame"]
