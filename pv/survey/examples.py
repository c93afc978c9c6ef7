"""Example questions per planted cause as an HTML fragment: for each group one question, in every arm, as it was seen.

In a simulated study (`pv survey simulate`'s folder) the image is what the machine observer looked at: the
right-hand panel of the arm's picture, resized to the study's input size exactly as the simulation does (shown
enlarged, pixelated). In a built study it is the side-by-side picture a participant sees. The options follow,
the key (M's top class) in bold, and with a response database how often each option was chosen per arm.
The question shown per group is its first by id (ids are in a seeded random order): no picking.
"""
from __future__ import annotations

import base64
import html
import io
from collections import Counter
from contextlib import closing
from pathlib import Path

from PIL import Image

from pv.survey import db
from pv.survey.bycause import question_groups
from pv.survey.manifest import load_manifest

DISPLAY_PX = 128  # side of each shown panel, in CSS pixels


def png_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def observer_view(path: Path, size: int) -> Image.Image:
    """The right-hand panel of a study picture resized to `size` as `pv survey simulate` feeds it to an observer."""
    import torch.nn.functional as F

    from pv.survey.simulate import right_panel

    panel = right_panel(path)[None]  # (1, 3, P, P)
    x = F.interpolate(panel, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)[0]
    return Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy())


def chosen_counts(responses: str | Path) -> Counter:
    """(arm, question id, option id) -> how many participants chose it."""
    with closing(db.open_for_reading(Path(responses))) as conn:
        return Counter((row["arm"], row["question_id"], row["option_id"]) for row in db.read_answers(conn))


def example_questions_html(study: str | Path, responses: str | Path | None = None) -> str:
    """One <section>: per group (shortcut, lookalike, texture_swap, none, correct: those present) one question in every arm."""
    study = Path(study)
    manifest = load_manifest(study)
    simulated = "simulation" in manifest
    size = int(manifest.get("presentation", {}).get("input_size") or 64)
    counts = chosen_counts(responses) if responses is not None else Counter()
    by_id = {q["id"]: q for q in manifest["questions"]}
    e = html.escape
    seen = "what the observer looked at (right-hand panel at the study's input size, enlarged)" if simulated else "what a participant sees"
    parts = [f"<section class='pv-examples'><p>One question per group, every arm: {e(seen)}. Options in the study's order; "
             "<b>bold</b>: the key (M's top class)" + ("; counts: participants who chose it in that arm" if responses else "") + ".</p>"]  # fmt: skip
    for group, ids in question_groups(manifest).items():
        q = by_id[sorted(ids)[0]]
        parts.append(f"<h3>{e(group)}: {e(q['id'])}, image {e(q['image_id'])}</h3><p>labels {e(', '.join(q['labels']))}; "
                     f"M's top class <b>{e(q['top_class'])}</b> ({q['top_prob']:.2f}); bucket {e(q.get('bucket', q['subset']))}</p>"
                     "<div style='display:flex;flex-wrap:wrap;gap:1em'>")  # fmt: skip
        for arm in manifest["arm_order"]:
            path = study / q["images"][arm]
            image = observer_view(path, size) if simulated else Image.open(path).convert("RGB")
            width = DISPLAY_PX * image.width // image.height
            options = "".join(
                f"<li>{'<b>' if o['id'] == q['answer'] else ''}{e(o['label'])}{'</b>' if o['id'] == q['answer'] else ''}"
                + (f" &times;{counts[arm, q['id'], o['id']]}" if responses else "") + "</li>"
                for o in q["options"]
            )  # fmt: skip
            parts.append(f"<figure style='margin:0'><img src='{png_uri(image)}' alt='{e(arm)}' width='{width}' height='{DISPLAY_PX}' "
                         f"style='image-rendering:pixelated'><figcaption>{e(manifest['arms'][arm]['title'])}</figcaption>"
                         f"<ol style='margin:.2em 0;padding-left:1.4em;font-size:90%'>{options}</ol></figure>")  # fmt: skip
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts) + "\n"
