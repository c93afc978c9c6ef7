"""Figures in the style of the paper's Figure 2 (a grid of panels, one row per explained class) and
the `index.html` gallery (`pv.explain.gallery`) that links every figure. Every file is written atomically (`pv.atomic`), and
every title is plain text: no mathtext, and names that are not UTF-8 are shown escaped."""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from pv.atomic import write_bytes
from pv.explain.gallery import Entry, href, html_table, plain_text, write_index  # noqa: F401 (the gallery's public names)

PLAIN = {"parse_math": False, "usetex": False}  # titles are text, never TeX: '$x$' in a file name stays '$x$'


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, H, W) in [0, 1] -> uint8 (H, W, 3)."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="png")
    return buffer.getvalue()


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write one image (3, H, W) in [0, 1] as PNG (atomically)."""
    return write_bytes(path, png_bytes(image))


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Render a matplotlib figure to PNG and write it atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return write_bytes(path, buffer.getvalue())


@dataclass
class Row:
    """One row of a figure: a label (class name and score) and its panels (3, H, W) in [0, 1];
    `titles` (optional) gives each panel its own title instead of the column titles."""

    label: str
    panels: list[torch.Tensor] = field(default_factory=list)
    titles: list[str] | None = None


@dataclass
class ColorBar:
    """A colour bar for the heat-map panels: colormap name, label and the two ends' meaning."""

    colormap: str = "jet"
    label: str = "saliency"
    low: str = "0: not used"
    high: str = "1: most salient"


def grid_figure(
    rows: Sequence[Row],
    columns: Sequence[str],
    path: str | Path,
    title: str = "",
    panel_inches: float = 2.0,
    dpi: int = 100,
    colorbar: ColorBar | None = None,
    note: str = "",
) -> Path:
    """Save a grid: column titles on top, each row labelled on its left, an optional colour bar
    under the panels and a note (e.g. which scores the labels show); returns the path."""
    if not rows or any(len(row.panels) != len(columns) for row in rows):
        raise ValueError(f"every row needs {len(columns)} panels ({', '.join(columns)})")
    extra = (0.4 if title else 0.1) + (0.6 if colorbar else 0) + (0.25 if note else 0)
    figure = Figure(figsize=(panel_inches * len(columns), panel_inches * len(rows) + extra), layout="constrained")
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row.panels):
            ax = axes[r, c]
            ax.imshow(to_uint8(panel))
            ax.set_xticks([])
            ax.set_yticks([])
            panel_title = row.titles[c] if row.titles else (columns[c] if r == 0 else "")
            if panel_title:
                ax.set_title(plain_text(panel_title), fontsize=9, **PLAIN)
            if c == 0 and row.label:
                ax.set_ylabel(plain_text(row.label), fontsize=8, **PLAIN)
    if colorbar is not None:
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        mappable = ScalarMappable(Normalize(0, 1), colormaps[colorbar.colormap])
        bar = figure.colorbar(mappable, ax=axes, orientation="horizontal", fraction=0.04, aspect=60, ticks=[0, 1])
        bar.set_label(plain_text(colorbar.label), fontsize=8, **PLAIN)
        bar.ax.set_xticklabels([plain_text(colorbar.low), plain_text(colorbar.high)], fontsize=7, **PLAIN)
    if title:
        figure.suptitle(plain_text(title), fontsize=10, **PLAIN)
    if note:
        figure.supxlabel(plain_text(note), fontsize=8, **PLAIN)
    return save_figure(figure, path, dpi)
