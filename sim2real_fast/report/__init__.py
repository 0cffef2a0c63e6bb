"""The run's report: PNG figures (:mod:`.plots`, matplotlib's Agg canvas) and report.md (:mod:`.markdown`)."""

from .markdown import COLUMNS, DEFAULT_COLUMNS, ORACLE, results_table, text_table, write_report
from .plots import plot_distributions, plot_embeddings, plot_roc, plot_training_curves, shower_quantities

__all__ = [
    "COLUMNS",
    "DEFAULT_COLUMNS",
    "ORACLE",
    "plot_distributions",
    "plot_embeddings",
    "plot_roc",
    "plot_training_curves",
    "results_table",
    "shower_quantities",
    "text_table",
    "write_report",
]
