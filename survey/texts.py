"""Default wording shown to participants: the question and each arm's introduction (plain text, no HTML)."""
from __future__ import annotations

from pathlib import Path

QUESTION_TEXT = "What is the model's prediction?"

COMMON = [
    "An artificial-intelligence model (an image classifier) looked at each of the photos you are about to see "
    "and named one object class for it. Sometimes it is right, sometimes it is wrong: it may name an object "
    "that is not in the photo at all.",
    "For each photo you will also see an explanation of the model's decision. Use it to guess what the MODEL "
    "predicted, not what you see in the photo. If you really cannot tell, choose \u201cI just can't tell\u201d.",
]

ARMS = {
    "pv": {
        "title": "Perception Visualization",
        "introduction": [
            *COMMON,
            "The explanation is a Perception Visualization. On the left is the photo. On the right is a picture of what "
            "the model perceives: a reconstruction of the photo computed from the model's internal representation, "
            "shown only where the model looked to make its decision (everything else is white). Shapes, textures and "
            "colours in the reconstruction show what the model thought it saw there.",
        ],
    },
    "gradcam": {
        "title": "Grad-CAM",
        "introduction": [
            *COMMON,
            "The explanation is a Grad-CAM heatmap. On the left is the photo. On the right is the same photo with a "
            "heatmap on top showing where the model looked to make its decision: red areas mattered most, blue areas "
            "least.",
        ],
    },
}


def read_introduction(path: str | Path) -> list[str]:
    """A plain-text file -> paragraphs (separated by blank lines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Introduction text not found: {path}")
    paragraphs = [" ".join(block.split()) for block in path.read_text(encoding="utf-8").split("\n\n")]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise ValueError(f"{path}: introduction text is empty")
    return paragraphs
