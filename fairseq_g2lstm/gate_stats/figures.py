"""Figures of the gate statistics, in the paper's style (its section 5; docs/paper.md).

Each function takes data (the numbers ``g2lstm-gates`` writes to its JSON files) and
returns a :class:`matplotlib.figure.Figure`; it saves nothing and touches no global
pyplot state. The caller saves it with :func:`save_png` at the size it was built with
and a fixed dpi, next to the JSON, so that a figure can be redrawn from the JSON without
running the model.

* :func:`histogram_figure`: the fraction of gate values per bin over [0, 1], one panel
  per gate (input, forget), one filled step series per checkpoint, overlaid.
* :func:`heatmap_figure`: the per-token mean gate of a sentence, one panel per
  checkpoint with rows input and forget, columns the target tokens (or words).
"""
from typing import Any, Mapping, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from ..atomic_file import atomic_file
from ..rnn.gate_tallies import GATES, HIGH, LOW

DPI = 100
HISTOGRAM_SIZE = (9.0, 3.4)  # inches: 900 x 340 pixels at DPI
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")
HEATMAP_CMAP = "viridis"
MAX_ANNOTATED_COLUMNS = 30  # write the values into the cells up to this many columns
MAX_UPRIGHT_COLUMNS = 8  # more columns than this, or a longer label, and the labels are slanted
MAX_UPRIGHT_LABEL = 10  # characters: about what fits under one column without meeting its neighbour
LABEL_CHAR_INCHES = 0.075  # the width of one tick-label character at matplotlib's default 10 pt
MAX_LABEL = 16  # characters of a column label drawn; an undertrained model's 200-character "word" is cut


def column_label(text: str) -> str:
    """A column's tick label, at most :data:`MAX_LABEL` characters (a longer one ends in
    an ellipsis; the JSON keeps the whole text)."""
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "\u2026"


def histogram_figure(layer: str, series: Sequence[Tuple[str, Mapping[str, Mapping[str, Any]]]],
                     title: str = "") -> Figure:
    """Gate-value histograms of one layer, checkpoints overlaid.

    layer: the layer's name (``decoder.0``), for the title.
    series: ``(label, gates)`` per checkpoint, where ``gates`` is that layer's entry of
        the JSON's ``layers``: ``{"input": {"histogram": [fractions], "share_below": ...,
        "share_above": ..., "mean": ...}, "forget": {...}}``.
    Each panel draws, per checkpoint, the fraction of values in each bin of [0, 1] as a
    filled step series labelled ``"<label>: x% < 0.1, y% > 0.9"``.
    """
    fig = Figure(figsize=HISTOGRAM_SIZE, layout="constrained")
    axes = fig.subplots(1, len(GATES), sharey=True)
    for ax, gate in zip(axes, GATES):
        for k, (label, gates) in enumerate(series):
            entry = gates.get(gate)
            if not entry or entry.get("histogram") is None:
                continue
            fractions = np.asarray(entry["histogram"], dtype=float)
            edges = np.linspace(0.0, 1.0, len(fractions) + 1)
            color = COLORS[k % len(COLORS)]
            ax.stairs(fractions, edges, fill=True, alpha=0.45 if len(series) > 1 else 0.8, color=color,
                      label=f"{label}: {entry['share_below']:.0%} < {LOW}, {entry['share_above']:.0%} > {HIGH}")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(bottom=0.0)
        ax.set_xlabel("gate value")
        ax.set_title(f"{gate} gate")
        ax.legend(loc="best", fontsize="small", frameon=False)
    axes[0].set_ylabel("fraction of values")
    fig.suptitle(title or f"{layer}: gate values, teacher-forced")
    return fig


def heatmap_figure(rows: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Per-token mean gates of one sentence, one panel per checkpoint.

    rows: per checkpoint ``{"label", "columns": [token or word], "input": [mean per
        column], "forget": [...]}`` (optionally ``"target_from"`` and ``"target"``, shown
        in the panel title when the target is the checkpoint's own translation).
    Panels have rows input and forget and share one colour bar over [0, 1].
    """
    slanted = slanted_labels(rows)
    fig = Figure(figsize=heatmap_size(rows, slanted), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    image = None
    for ax, row in zip(axes, rows):
        values = np.array([row[gate] for gate in GATES], dtype=float)  # [gates, columns]
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap=HEATMAP_CMAP, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(len(GATES)), [f"{gate}" for gate in GATES])
        ax.set_xticks(range(len(row["columns"])), [column_label(c) for c in row["columns"]], rotation=45 if slanted else 0,
                      ha="right" if slanted else "center", rotation_mode="anchor" if slanted else "default")
        if len(row["columns"]) <= MAX_ANNOTATED_COLUMNS:
            for (g, c), value in np.ndenumerate(values):
                ax.text(c, g, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                        color="black" if value > 0.6 else "white")
        heading = row["label"]
        if str(row.get("target_from", "given")) != "given":
            heading += f" ({row['target_from']})"
        ax.set_title(heading, fontsize="medium", loc="left")
    fig.colorbar(image, ax=list(axes), label="mean gate value", fraction=0.05, pad=0.02)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def slanted_labels(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a heatmap's column labels must slant so that neighbours do not run into
    each other: many columns, or one long label."""
    return (max(len(row["columns"]) for row in rows) > MAX_UPRIGHT_COLUMNS
            or any(len(column_label(label)) > MAX_UPRIGHT_LABEL for row in rows for label in row["columns"]))


def heatmap_size(rows: Sequence[Mapping[str, Any]], slanted: bool) -> Tuple[float, float]:
    """The size (inches) of the heatmap of ``rows``: wide enough for its columns, and each
    panel tall enough for its two rows and its labels (``slanted``, from
    :func:`slanted_labels`: a label slanted at 45 degrees needs its length times sin 45
    degrees)."""
    columns = max(len(row["columns"]) for row in rows)
    label_depth = 0.3  # one upright line
    if slanted:
        longest = max(len(column_label(label)) for row in rows for label in row["columns"])
        label_depth = max(label_depth, 0.71 * LABEL_CHAR_INCHES * longest)
    return (min(max(6.0, 2.5 + 0.6 * columns), 24.0), 1.1 + (1.2 + label_depth) * len(rows))


def save_png(fig: Figure, path) -> None:
    """Save ``fig`` as a PNG at its own size and :data:`DPI`."""
    with atomic_file(path, "wb") as stream:
        fig.savefig(stream, dpi=DPI, format="png")
