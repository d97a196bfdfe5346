"""Small PNG charts for metadata, where a picture beats a column of numbers (Dagster-free)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

Series = Sequence[tuple[float | str, float]]


def line_chart_png(
    series: Mapping[str, Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    hline: tuple[float, str] | None = None,
) -> bytes:
    """A small line chart, one line per series; `hline` draws a labelled threshold."""
    # A bare Figure (no pyplot) keeps no global state and needs no display backend.
    fig = Figure(figsize=(5, 3), dpi=80, layout="constrained")
    ax = fig.subplots()
    for name, points in series.items():
        xs, ys = zip(*points, strict=True) if points else ((), ())
        ax.plot(xs, ys, marker="o", label=name)
    if hline is not None:
        ax.axhline(hline[0], color="crimson", linestyle="--", label=hline[1])
    if logx:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown embedding the PNG as a data URI, so the picture travels with the metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
