"""The `index.html` gallery: every figure with its caption and links, usable at thousands of images.

The page holds one card per entry (so it works without JavaScript, images loaded lazily); a small
script shows one page of cards at a time and adds a filter per tag (e.g. bucket, class) built from the
entries' `tags`. Text is plain (escaped); file names that are not UTF-8 are shown escaped.
"""
from __future__ import annotations

import html
import json
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pv.atomic import write_text

PAGE_SIZE = 60


def plain_text(text: str) -> str:
    """`text` as printable UTF-8: undecodable bytes (surrogate escapes) become '\\xff'."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class Entry:
    """One item of the gallery: a figure, its caption, optional extra links (label -> path) and filter
    tags (filter name -> the entry's values, e.g. {"bucket": ["correct"], "class": ["cat", "dog"]})."""

    figure: Path
    title: str
    caption: str = ""
    links: dict[str, Path] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)


def href(path: Path, base: Path) -> str:
    """A relative URL from `base` to `path`: every byte of the file name percent-encoded as needed."""
    relative = Path(os.path.relpath(path, base)).as_posix()
    return html.escape(urllib.parse.quote(os.fsencode(relative), safe="/"), quote=True)


def html_table(rows: Sequence[dict]) -> str:
    """Rows (dicts with the same keys) as an HTML table; floats to 4 decimals."""
    if not rows:
        return ""
    columns = list(rows[0])
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    head = "".join(f"<th>{html.escape(plain_text(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(plain_text(fmt(row[c])))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def card(entry: Entry, out_dir: Path) -> str:
    esc = lambda text: html.escape(plain_text(text))  # noqa: E731
    links = " ".join(f'<a href="{href(p, out_dir)}">{esc(name)}</a>' for name, p in entry.links.items())
    tags = html.escape(json.dumps({plain_text(k): [plain_text(v) for v in values] for k, values in entry.tags.items()}), quote=True)
    link = href(entry.figure, out_dir)
    return (
        f'<figure data-tags="{tags}"><a href="{link}"><img src="{link}" alt="{esc(entry.title)}" loading="lazy"></a>'
        f"<figcaption><b>{esc(entry.title)}</b><br>{esc(entry.caption)}<br>{links}</figcaption></figure>"
    )


SCRIPT = """
(function () {
  const PAGE = %d;
  const cards = Array.from(document.querySelectorAll("main > figure"));
  const tags = cards.map(c => JSON.parse(c.dataset.tags || "{}"));
  const names = [...new Set(tags.flatMap(t => Object.keys(t)))];
  const controls = document.getElementById("controls");
  const status = document.getElementById("status");
  const selects = {};
  let page = 0, matching = cards;
  for (const name of names) {
    const values = [...new Set(tags.flatMap(t => t[name] || []))].sort();
    const label = document.createElement("label");
    label.textContent = name + " ";
    const select = document.createElement("select");
    select.name = name;
    select.add(new Option("all", ""));
    for (const value of values) select.add(new Option(value, value));
    select.addEventListener("change", () => { page = 0; update(); });
    label.appendChild(select);
    controls.appendChild(label);
    selects[name] = select;
  }
  const previous = document.getElementById("previous"), next = document.getElementById("next");
  previous.addEventListener("click", () => { page = Math.max(0, page - 1); update(); });
  next.addEventListener("click", () => { page += 1; update(); });
  function update() {
    matching = cards.filter((c, i) => names.every(n => !selects[n].value || (tags[i][n] || []).includes(selects[n].value)));
    const pages = Math.max(1, Math.ceil(matching.length / PAGE));
    page = Math.min(page, pages - 1);
    const shown = new Set(matching.slice(page * PAGE, (page + 1) * PAGE));
    for (const c of cards) c.hidden = !shown.has(c);
    previous.disabled = page === 0;
    next.disabled = page >= pages - 1;
    status.textContent = matching.length
      ? `showing ${page * PAGE + 1}-${page * PAGE + shown.size} of ${matching.length} (page ${page + 1} of ${pages}; ${cards.length} in all)`
      : `no image matches (${cards.length} in all)`;
  }
  document.getElementById("pager").hidden = false;
  update();
})();
"""


def write_index(
    out_dir: str | Path,
    entries: Sequence[Entry],
    title: str,
    intro: str = "",
    tables: Sequence[tuple[str, Sequence[dict]]] = (),
    page_size: int = PAGE_SIZE,
) -> Path:
    """Write `out_dir/index.html`: optional tables (heading, rows), then the gallery, a page at a time, with filters."""
    out_dir = Path(out_dir)
    esc = lambda text: html.escape(plain_text(text))  # noqa: E731
    sections = "".join(f"<h2>{esc(heading)}</h2>\n{html_table(rows)}\n" for heading, rows in tables)
    cards = "\n".join(card(entry, out_dir) for entry in entries)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
main {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; max-width: 48em; border: 1px solid #ddd; padding: .5em; }}
figure[hidden] {{ display: none; }}
img {{ max-width: 100%; }}
figcaption {{ font-size: .85em; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ border: 1px solid #ccc; padding: .2em .5em; text-align: right; }}
#pager {{ margin: 1em 0; display: flex; gap: 1em; align-items: center; flex-wrap: wrap; }}
</style></head>
<body><h1>{esc(title)}</h1><p>{esc(intro)}</p>
{sections}<div id="pager" hidden><span id="controls"></span><button id="previous">previous</button><button id="next">next</button><span id="status"></span></div>
<main>
{cards}
</main>
<script>{SCRIPT % page_size}</script></body></html>
"""
    return write_text(out_dir / "index.html", page)
