"""The run's report: results tables (Markdown and plain text) and report.md.

A results dict maps each method to its scores, ``{method: {"target_accuracy": 0.91, ...}}``;
accuracy-like scores are fractions in [0, 1] and print as percent. A score may be a number, None,
NaN (both print as "–") or a multi-seed summary ``{"mean": m, "std": s}`` (prints "m ± s").
"""

from __future__ import annotations

import json
import math
import numbers
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..io._atomic import atomic_path

__all__ = ["BASELINES", "COLUMNS", "DEFAULT_COLUMNS", "ORACLE", "gap_decomposition_table", "paired_table",
           "results_table", "text_table", "write_report"]

MISSING = "–"

#: The validator name of the reference "best checkpoint" (picked with the real labels) in ``selection``.
ORACLE = "oracle"


class Column(NamedTuple):
    """How a score prints: header, scale factor (100 for percent) and decimals."""

    header: str
    scale: float
    decimals: int


#: Known scores and how they print; other keys print with 4 significant digits under their own name.
COLUMNS = {
    "target_accuracy": Column("real accuracy [%]", 100.0, 1),
    "target_f1": Column("real F1 [%]", 100.0, 1),
    "target_auc": Column("real AUC [%]", 100.0, 1),
    "target_accuracy_last": Column("real acc., last epoch [%]", 100.0, 1),
    "em_accuracy": Column("real e/γ accuracy [%]", 100.0, 1),
    "em_auc": Column("real e/γ AUC", 1.0, 3),
    "pion_auc": Column("real π/EM AUC", 1.0, 4),
    "source_accuracy": Column("sim accuracy [%]", 100.0, 1),
    "gap_recovered": Column("gap recovered [%]", 100.0, 1),
    "a_distance": Column("A-distance", 1.0, 3),
    "mmd": Column("MMD", 1.0, 4),
    "two_sample_auc": Column("two-sample AUC [%]", 100.0, 1),
    "train_seconds": Column("train time [s]", 1.0, 1),
    "energy_joules": Column("energy [J]", 1.0, 1),
}

DEFAULT_COLUMNS = (
    "target_accuracy",
    "target_accuracy_last",
    "em_auc",
    "pion_auc",
    "source_accuracy",
    "gap_recovered",
    "a_distance",
    "mmd",
    "train_seconds",
    "energy_joules",
)

# Captions of the figures that sim2real_fast.report.plots draws, by the start of the file's name.
_CAPTIONS = {
    "roc": "One-vs-rest ROC curves on the real data, one panel per class; the legend gives each method's AUC.",
    "embedding": "Sim (blue) and real (orange) features on their first two principal components, per model: "
    "adaptation should make the two clouds overlap.",
    "distribution": "Shower quantities in the sim and real domains, histograms of unit area.",
    "training": "Training loss per epoch (dashed: the cross-entropy part); dotted lines mark the stages.",
}


# config keys that the report shows in their own place (class names in the tables, the device with the machine).
_SHOWN_ELSEWHERE = ("class_names", "device")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _format(value, column: str, *, where: str) -> str:
    """One score as text: scaled and rounded per COLUMNS, "m ± s" for {"mean", "std"}, "–" for None/NaN."""
    spec = COLUMNS.get(column)

    def number(x) -> str:
        if spec is None:
            return f"{x:.4g}"
        return f"{x * spec.scale:.{spec.decimals}f}"

    if isinstance(value, Mapping):
        if "mean" not in value:
            raise TypeError(f"{where}: expected a number or {{'mean', 'std'}}, got {value!r:.80}")
        mean, std = value["mean"], value.get("std")
        if mean is None or (_is_number(mean) and math.isnan(mean)):
            return MISSING
        if std is None or (_is_number(std) and math.isnan(std)):
            return number(mean)
        return f"{number(mean)} ± {number(std)}"
    if value is None:
        return MISSING
    if not _is_number(value):
        raise TypeError(f"{where}: expected a number, None or {{'mean', 'std'}}, got {value!r:.80}")
    return MISSING if math.isnan(value) else number(value)


def _cells(results: Mapping, columns: Sequence[str] | None, name: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of text cells (first column: the method)."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError(f"{name}: results must be a non-empty dict {{method: {{score: value}}}}, got {results!r:.80}")
    columns = DEFAULT_COLUMNS if columns is None else tuple(columns)
    if not columns or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"{name}: columns must be a non-empty list of score names, got {columns!r}")
    rows = []
    for method, scores in results.items():
        if not isinstance(scores, Mapping):
            raise ValueError(f"{name}: results[{method!r}] must be a dict of scores, got {type(scores).__name__}")
        rows.append(
            [str(method)]
            + [_format(scores.get(c), c, where=f"{name}: results[{method!r}][{c!r}]") for c in columns]
        )
    header = ["method"] + [COLUMNS[c].header if c in COLUMNS else c for c in columns]
    return header, rows


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns are left-aligned, the others right-aligned."""
    align = [":---" if i < left else "---:" for i in range(len(header))]
    escaped = [[str(cell).replace("|", r"\|") for cell in row] for row in (header, *rows)]
    return "\n".join("| " + " | ".join(row) + " |" for row in (escaped[0], align, *escaped[1:]))


def results_table(results: Mapping, *, columns: Sequence[str] | None = None) -> str:
    """A Markdown table of the results: one row per method (in the dict's order), one column per score.

    ``columns`` defaults to :data:`DEFAULT_COLUMNS`; a method without a score gets "–" there.
    """
    return _markdown(*_cells(results, columns, "results_table"))


def text_table(results: Mapping, *, columns: Sequence[str] | None = None) -> str:
    """The table of :func:`results_table` as aligned plain text for a terminal."""
    header, rows = _cells(results, columns, "text_table")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _config_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    return str(value)


def _configuration(config: Mapping) -> list[str]:
    """The run's settings (config's items in order) and the machine it ran on."""
    lines = ["## Configuration", ""]
    lines += [f"- **{key}**: {_config_value(value)}" for key, value in config.items() if key not in _SHOWN_ELSEWHERE]
    device = str(config.get("device", "cpu"))
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    lines += [
        "",
        "Machine:",
        "",
        f"- **platform**: {platform.platform()}",
        f"- **processor**: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        f"- **python / torch**: {platform.python_version()} / {torch.__version__}",
        f"- **device**: {device}",
    ]
    return lines


def _alarms(alarms: Mapping, config: Mapping) -> list[str]:
    """Methods whose sim accuracy exceeds their real accuracy by more than the threshold."""
    threshold = config.get("gap_threshold")
    rule = "by more than the threshold" if threshold is None else f"by more than {100 * threshold:.1f} points"
    lines = ["## Sim-to-real gap alarms", ""]
    if not alarms:
        return lines + [f"No method's sim accuracy exceeds its real accuracy {rule}."]
    lines.append(f"Sim accuracy exceeds real accuracy {rule} for:")
    lines.append("")
    for method, gap in alarms.items():
        lines.append(f"- **{method}**: {_format(gap, 'target_accuracy', where=f'alarms[{method!r}]')} points")
    return lines


def _selection(selection: Mapping) -> list[str]:
    """Which checkpoint each validator picked, its real accuracy and its shortfall from the oracle's pick."""
    lines = [
        "## Model selection",
        "",
        "The checkpoint each validator picks without real labels, and its real accuracy; "
        f"`{ORACLE}` is the best checkpoint by real accuracy (a reference, not a usable validator).",
        "",
    ]
    header = ["method", "validator", "stage", "epoch", "real accuracy [%]", "vs oracle [points]"]
    rows = []
    for method, picks in selection.items():
        if not isinstance(picks, Mapping):
            raise ValueError(f"write_report: selection[{method!r}] must be a dict {{validator: pick}}")
        for validator, pick in picks.items():
            if not isinstance(pick, Mapping):
                raise ValueError(f"write_report: selection[{method!r}][{validator!r}] must be a dict")
        oracle = picks.get(ORACLE, {}).get("target_accuracy")
        for validator in sorted(picks, key=lambda v: v == ORACLE):  # the oracle last
            pick = picks[validator]
            accuracy = pick.get("target_accuracy")
            where = f"write_report: selection[{method!r}][{validator!r}]"
            shortfall = None
            if validator != ORACLE and _is_number(accuracy) and _is_number(oracle):
                shortfall = accuracy - oracle
            rows.append([
                str(method),
                str(validator),
                str(pick.get("stage", MISSING)),
                str(pick.get("epoch", MISSING)),
                _format(accuracy, "target_accuracy", where=where),
                _format(shortfall, "target_accuracy", where=where),
            ])
    return lines + [_markdown(header, rows, left=3)]


def _figures(figures: Mapping, folder: Path) -> list[str]:
    lines = ["## Figures"]
    for title, figure in figures.items():
        figure = Path(figure)
        link = Path(os.path.relpath(figure, folder)) if figure.is_absolute() else figure
        lines += ["", f"### {title}", "", f"![{title}]({link.as_posix()})"]
        caption = next((text for prefix, text in _CAPTIONS.items() if figure.stem.startswith(prefix)), None)
        if caption:
            lines += ["", caption]
    return lines


def _matrix(value) -> np.ndarray:
    if isinstance(value, Mapping) and "mean" in value:
        value = value["mean"]
    return np.asarray(value, dtype=np.float64)


def _per_class(results: Mapping, class_names: Sequence[str] | None) -> list[str]:
    """Per-class scores and confusion matrices of the methods that have them."""
    lines = []
    for method, scores in results.items():
        per_class, confusion = scores.get("per_class"), scores.get("confusion")
        if per_class is None and confusion is None:
            continue
        lines += ["", f"### {method}"]
        if per_class is not None:
            lines += ["", _per_class_table(method, per_class, class_names)]
        if confusion is not None:
            lines += ["", _confusion_table(method, confusion, class_names)]
    return ["## Per-class scores", *lines] if lines else []


def _per_class_table(method, per_class: Mapping, class_names: Sequence[str] | None) -> str:
    """{class: {score: value}} or {score: [one value per class]} as a table, one row per class.

    In the first form, entries that are not dicts are left out, so scikit-learn's
    ``classification_report(..., output_dict=True)`` can be passed as it is (its "accuracy" goes).
    """
    if not isinstance(per_class, Mapping) or not per_class:
        raise ValueError(f"write_report: results[{method!r}]['per_class'] must be a non-empty dict")
    if any(isinstance(v, Mapping) and "mean" not in v for v in per_class.values()):
        by_class = {name: values for name, values in per_class.items() if isinstance(values, Mapping)}
    else:  # {score: per-class sequence}
        lengths = {len(v) if isinstance(v, (list, tuple, np.ndarray)) else None for v in per_class.values()}
        n = lengths.pop() if len(lengths) == 1 else None
        names = list(class_names) if class_names else [str(i) for i in range(n or 0)]
        if n is None or len(names) != n:
            raise ValueError(
                f"write_report: results[{method!r}]['per_class'] must be {{class: {{score: value}}}} or "
                f"{{score: [one value per class]}} with {len(names)} classes"
            )
        by_class = {name: {score: values[i] for score, values in per_class.items()} for i, name in enumerate(names)}
    scores = list(dict.fromkeys(score for values in by_class.values() for score in values))
    header = ["class"] + [s if s == "support" else f"{s} [%]" for s in scores]
    rows = []
    for name, values in by_class.items():
        row = [str(name)]
        for score in scores:
            value = values.get(score)
            if score == "support" and _is_number(value):
                row.append(f"{value:.0f}")
            else:
                row.append(_format(value, "target_accuracy", where=f"results[{method!r}]['per_class'][{name!r}]"))
        rows.append(row)
    return _markdown(header, rows)


def _confusion_table(method, confusion, class_names: Sequence[str] | None) -> str:
    """The confusion matrix (rows: true class, columns: predicted class) as a table."""
    matrix = _matrix(confusion)
    n = matrix.shape[0] if matrix.ndim == 2 else 0
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    if matrix.shape != (n, n) or n != len(names):
        raise ValueError(
            f"write_report: results[{method!r}]['confusion'] must be a (C, C) matrix with C = {len(names)} "
            f"class names, got shape {matrix.shape}"
        )
    spec = ".0f" if np.all(matrix == np.round(matrix)) else ".3g"
    header = ["true \\ predicted", *map(str, names)]
    rows = [[str(name), *(format(x, spec) for x in row)] for name, row in zip(names, matrix)]
    mean = isinstance(confusion, Mapping)
    return f"Confusion matrix{' (mean over seeds)' if mean else ''}:\n\n" + _markdown(header, rows)


#: The trivial label-free baselines whose share of the gap the decomposition table shows.
BASELINES = ("mask_cells", "rescale_layers", "mask_cells+rescale_layers")


def _mean(entry: Mapping, key: str):
    value = entry.get(key)
    return value.get("mean") if isinstance(value, Mapping) else value


def paired_table(methods: Mapping) -> str:
    """Per method: its mean paired difference to source_only (same instance, data and seed) with the
    bootstrap 95% interval, for accuracy (points) and the e/γ and π/EM AUCs, and the fraction of
    detector instances where it beats source_only. ``methods[m]["vs_source_only"]`` as the runner writes it."""
    header = ["method", "Δ real accuracy [points] (95% CI)", "Δ e/γ AUC (95% CI)", "Δ π/EM AUC (95% CI)",
              "instances won", "runs"]
    rows = []
    for method, entry in methods.items():
        paired = entry.get("vs_source_only")
        if not paired:
            continue
        cells = [str(method)]
        for key, scale, decimals in (("target_accuracy", 100, 1), ("em_auc", 1, 3), ("pion_auc", 1, 4)):
            d = paired.get(key)
            if not d or not _is_number(d.get("mean")) or math.isnan(d["mean"]):
                cells.append(MISSING)
                continue
            cells.append(f"{scale * d['mean']:+.{decimals}f} [{scale * d['low']:+.{decimals}f}, "
                         f"{scale * d['high']:+.{decimals}f}]")
        accuracy = paired.get("target_accuracy", {})
        wins = accuracy.get("wins")
        cells += [MISSING if not _is_number(wins) or math.isnan(wins) else f"{100 * wins:.0f}%",
                  str(accuracy.get("runs", MISSING))]
        rows.append(cells)
    return _markdown(header, rows) if rows else ""


def gap_decomposition_table(methods: Mapping) -> str:
    """How much of the gap (target_oracle − source_only on real accuracy) each trivial baseline removes.

    A baseline at 100% closes the gap with a mask or a per-layer scale and no learning from real data;
    methods should be read against the best of these rows.
    """
    low, high = (_mean(methods.get(m, {}), "target_accuracy") for m in ("source_only", "target_oracle"))
    if not _is_number(low) or not _is_number(high):
        return ""
    header = ["baseline", "real accuracy [%]", "gap removed [%]"]
    rows = [["source_only", f"{100 * low:.1f}", "0.0"]]
    for name in BASELINES:
        value = _mean(methods.get(name, {}), "target_accuracy")
        if _is_number(value):
            share = MISSING if high == low else f"{100 * (value - low) / (high - low):.1f}"
            rows.append([name, f"{100 * value:.1f}", share])
    rows.append(["target_oracle", f"{100 * high:.1f}", "100.0"])
    return _markdown(header, rows) if len(rows) > 2 else ""


def write_report(
    path: str | os.PathLike,
    *,
    title: str = "sim2real_fast report",
    results: Mapping,
    figures: Mapping[str, str | os.PathLike],
    config: Mapping,
    selection: Mapping | None = None,
    alarms: Mapping | None = None,
    notes: Sequence[str] | None = None,
    sections: Mapping[str, str] | None = None,
) -> Path:
    """Write the run's Markdown report to ``path`` (atomically) and return the path.

    Args:
        title: the first line's heading (e.g. that the run was a smoke test, not a measurement).
        results: {method: scores} as for :func:`results_table`; a method's optional ``per_class``
            ({class: {score: value}} or {score: [one per class]}) and ``confusion`` ((C, C) counts,
            rows true, columns predicted) get their own tables.
        figures: {title: PNG path}, shown in order; relative paths are kept as they are (relative to
            the report's folder), absolute ones are made relative to it.
        config: the run's settings, listed as given; ``class_names`` names the classes and
            ``gap_threshold`` (a fraction), ``device`` are used where present.
        selection: {method: {validator: {"epoch", "stage", "target_accuracy"}}}, the checkpoint each
            validator picked; the validator :data:`ORACLE` is the reference best checkpoint.
        alarms: {method: sim accuracy - real accuracy} for the methods over the gap threshold
            (an empty dict says none is); None leaves the section out.
        notes: lines listed at the end.
        sections: {title: Markdown} shown after the results table (empty ones are left out).
    """
    path = Path(path)
    for argument, value in (("results", results), ("figures", figures), ("config", config)):
        if not isinstance(value, Mapping):
            raise ValueError(f"write_report: {argument} must be a dict, got {type(value).__name__}")
    class_names = config.get("class_names")
    lines = [f"# {title}", "", *_configuration(config), "", "## Results", "", results_table(results)]
    for heading, text in (sections or {}).items():
        if text:
            lines += ["", f"## {heading}", "", text]
    if alarms is not None:
        lines += ["", *_alarms(alarms, config)]
    if selection:
        lines += ["", *_selection(selection)]
    if figures:
        lines += ["", *_figures(figures, path.parent)]
    per_class = _per_class(results, class_names)
    if per_class:
        lines += ["", *per_class]
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
