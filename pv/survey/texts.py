"""Default wording shown to participants: the question and each arm's introduction (plain text, no HTML).

Neutral, as in the paper ("throughout the survey we do not inform the user whether or not the model has
made a mistake"): nothing tells participants that the model errs, how often, or how its answer relates to
the photo. The two arms share every sentence except the one describing their explanation.
"""
from __future__ import annotations

from pathlib import Path
from pv.survey.errors import MissingFileError, StudyError

QUESTION_TEXT = "What is the model's prediction?"
ATTENTION_QUESTION_TEXT = "Please read the picture above and answer as it asks."

COMMON = [
    "An artificial-intelligence model (an image classifier) looked at each of the photos you are about to see "
    "and named one object class for it.",
    "For each photo you will also see an explanation of the model's decision. Use it to guess which class the "
    "model named. If you really cannot tell, choose \u201cI just can't tell\u201d.",
]

PV_EXPLANATION = (
    "The explanation is a Perception Visualization. On the left is the photo. On the right is a picture of what "
    "the model perceives: a reconstruction of the photo computed from the model's internal representation, "
    "shown only where the model looked to make its decision (everything else is white). Shapes, textures and "
    "colours in the reconstruction show what the model thought it saw there."
)
GRADCAM_EXPLANATIONS = {
    "masked": "The explanation is a Grad-CAM map. On the left is the photo. On the right is the same photo, shown only "
    "where the model looked to make its decision (everything else is white): the more clearly a region shows, the "
    "more it mattered.",
    "overlay": "The explanation is a Grad-CAM heatmap. On the left is the photo. On the right is the same photo with a "
    "heatmap on top showing where the model looked to make its decision: red areas mattered most, blue areas least.",
}
GRADCAM_PRESENTATIONS = tuple(GRADCAM_EXPLANATIONS)


def arm_texts(gradcam_presentation: str = "masked") -> dict[str, dict]:
    """Each arm's title and introduction; the Grad-CAM paragraph matches how its images are drawn."""
    if gradcam_presentation not in GRADCAM_EXPLANATIONS:
        raise StudyError(f"Grad-CAM presentation must be one of {', '.join(GRADCAM_PRESENTATIONS)}, got {gradcam_presentation!r}")
    return {
        "pv": {"title": "Perception Visualization", "introduction": [*COMMON, PV_EXPLANATION]},
        "gradcam": {"title": "Grad-CAM", "introduction": [*COMMON, GRADCAM_EXPLANATIONS[gradcam_presentation]]},
    }


ARMS = arm_texts()


def read_introduction(path: str | Path) -> list[str]:
    """A plain-text file -> paragraphs (separated by blank lines)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Introduction text not found: {path}")
    paragraphs = [" ".join(block.split()) for block in path.read_text(encoding="utf-8").split("\n\n")]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise StudyError(f"{path}: introduction text is empty")
    return paragraphs
