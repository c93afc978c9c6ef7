"""Figures in the style of the paper's Figure 2 (a grid of panels, one row per explained class) and
an `index.html` gallery that links every figure."""
from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, H, W) in [0, 1] -> uint8 (H, W, 3)."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write one image (3, H, W) in [0, 1] as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path


@dataclass
class Row:
    """One row of a figure: a label (class name and probability) and its panels (3, H, W) in [0, 1]."""

    label: str
    panels: list[torch.Tensor] = field(default_factory=list)


def grid_figure(rows: Sequence[Row], columns: Sequence[str], path: str | Path, title: str = "", panel_inches: float = 2.0, dpi: int = 100) -> Path:
    """Save a grid: column titles on top, each row labelled on its left; returns the path."""
    if not rows or any(len(row.panels) != len(columns) for row in rows):
        raise ValueError(f"every row needs {len(columns)} panels ({', '.join(columns)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(panel_inches * len(columns), panel_inches * len(rows) + (0.4 if title else 0.1)))
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row.panels):
            ax = axes[r, c]
            ax.imshow(to_uint8(panel))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row.label, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return path


@dataclass
class Entry:
    """One item of the gallery: a figure, its caption, and optional extra links (label -> path)."""

    figure: Path
    title: str
    caption: str = ""
    links: dict[str, Path] = field(default_factory=dict)


def write_index(out_dir: str | Path, entries: Sequence[Entry], title: str, intro: str = "") -> Path:
    """Write `out_dir/index.html`: a gallery with every figure (relative links) and its caption."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def href(path: Path) -> str:
        return html.escape(Path(os.path.relpath(path, out_dir)).as_posix(), quote=True)

    cards = []
    for entry in entries:
        links = " ".join(f'<a href="{href(p)}">{html.escape(name)}</a>' for name, p in entry.links.items())
        cards.append(
            f'<figure><a href="{href(entry.figure)}"><img src="{href(entry.figure)}" alt="{html.escape(entry.title, quote=True)}" loading="lazy"></a>'
            f"<figcaption><b>{html.escape(entry.title)}</b><br>{html.escape(entry.caption)}<br>{links}</figcaption></figure>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
main {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; max-width: 48em; border: 1px solid #ddd; padding: .5em; }}
img {{ max-width: 100%; }}
figcaption {{ font-size: .85em; }}
</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>
<main>
{chr(10).join(cards)}
</main></body></html>
"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
