"""The run's report: PNG figures (:mod:`.plots`, matplotlib's Agg canvas) and report.md (:mod:`.markdown`)."""

from .markdown import (BASELINES, COLUMNS, DEFAULT_COLUMNS, ORACLE, gap_decomposition_table, paired_table, results_table,
                       text_table, write_report)
from .plots import plot_distributions, plot_embeddings, plot_roc, plot_training_curves, shower_quantities

__all__ = [
    "BASELINES",
    "COLUMNS",
    "DEFAULT_COLUMNS",
    "ORACLE",
    "gap_decomposition_table",
    "paired_table",
    "plot_distributions",
    "plot_embeddings",
    "plot_roc",
    "plot_training_curves",
    "results_table",
    "shower_quantities",
    "text_table",
    "write_report",
]
