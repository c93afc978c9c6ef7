"""`pv survey build`: select questions, render both arms' images and write the study manifest.

Each arm's image is the input (left) beside its explanation for the model's top class (right), at the
same size and layout: the PV arm shows the Perception Visualization (decoder reconstruction of the
classifier's latent, white where the model does not look), the Grad-CAM arm the Grad-CAM heatmap
overlay. Both come from `pv explain`'s `PerceptionVisualizer` (Grad-CAM at the decoder's latent layer).
"""
from __future__ import annotations

import datetime as dt
import html
import random
import shutil
import warnings
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from pv.data import ImageTransform, load_image
from pv.explain import PerceptionVisualizer, heatmap_overlay
from pv.models import Classifier, Decoder, load_decoder
from survey import texts
from survey.manifest import FORMAT, MANIFEST_NAME, write_manifest
from survey.questions import Prediction, question_options, read_predictions, select_questions

ARMS = ("pv", "gradcam")


class ArmRenderer:
    """Images (B, 3, S, S) in [0, 1] + top-class indices -> one side-by-side figure per arm.

    The explanations are `pv explain`'s own: `PerceptionVisualizer` gives the reconstruction of the
    classifier's latent and the Grad-CAM map of the top class at that layer; the PV arm shows
    (1 - m) + m y, the Grad-CAM arm the same map m as a heatmap over the photo.
    """

    def __init__(self, classifier: Classifier, decoder: Decoder, encoder_config: dict, colormap: str = "jet", alpha: float = 0.5,
                 decoder_name: str = "the decoder"):  # fmt: skip
        self.classifier = classifier.eval()
        arch = encoder_config.get("arch", classifier.config["arch"])
        if arch != classifier.config["arch"]:
            raise ValueError(f"{decoder_name} decodes a {arch} latent but the classifier is a {classifier.config['arch']}")
        self.visualizer = PerceptionVisualizer(self.classifier, decoder.eval(), encoder_config, decoder_name=decoder_name)
        self.colormap, self.alpha = colormap, alpha

    def __call__(self, images: torch.Tensor, top: torch.Tensor) -> dict[str, torch.Tensor]:
        result = self.visualizer(images, top)  # pv (B, 1, 3, S, S), saliency (B, 1, 1, S, S)
        explanations = {
            "pv": result["pv"][:, 0],
            "gradcam": heatmap_overlay(images, result["saliency"][:, 0], self.colormap, self.alpha),
        }
        return {arm: side_by_side(images, explained) for arm, explained in explanations.items()}

    @torch.no_grad()
    def top_classes(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images).argmax(dim=1)  # (B,)


def side_by_side(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) twice -> (B, 3, S, 2S + gap) with a white gap of S // 28 (at least 2) pixels."""
    gap = torch.ones(*left.shape[:3], max(2, left.shape[-1] // 28), dtype=left.dtype)
    return torch.cat([left, gap, right], dim=3)


def save_png(image: torch.Tensor, path: Path) -> None:
    """(3, H, W) in [0, 1] -> 8-bit PNG."""
    array = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def load_inputs(rows: list[Prediction], transform: ImageTransform, table: Path) -> torch.Tensor:
    """The question images as one batch (B, 3, S, S)."""
    images = []
    for row in rows:
        if not row.path or not Path(row.path).is_file():
            raise FileNotFoundError(f"{table}: image {row.id!r} has path {row.path!r}, which does not exist")
        images.append(transform(load_image(row.path), name=row.path))
    return torch.stack(images)


def build_study(
    analysis: str | Path,
    classifier: str | Path,
    decoder: str | Path,
    out: str | Path,
    n_correct: int = 16,
    n_incorrect: int = 14,
    seed: int = 0,
    image_size: int = 224,
    name: str | None = None,
    introductions: dict[str, str | Path] | None = None,
    overwrite: bool = False,
    batch_size: int = 8,
    progress: bool = True,
) -> Path:
    """Write STUDY/manifest.json, STUDY/images/{pv,gradcam}/QID.png and STUDY/preview.html; return the manifest path."""
    out = Path(out)
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise ValueError(f"{out / MANIFEST_NAME} already exists; pass --overwrite to rebuild the study (its answer key changes)")
    table = Path(analysis) / "predictions.csv" if Path(analysis).is_dir() else Path(analysis)
    rows, csv_classes = read_predictions(table)
    model = Classifier.from_checkpoint(classifier)
    decoder_model, encoder_config = load_decoder(decoder)
    classes = model.class_names
    if csv_classes and csv_classes != classes:
        raise ValueError(f"{table}: prob_<class> columns {csv_classes} do not match the classifier's classes {classes}")
    chosen = select_questions(rows, n_correct, n_incorrect, seed)
    option_rng = random.Random(f"options-{seed}")
    renderer = ArmRenderer(model, decoder_model, encoder_config, decoder_name=f"decoder {decoder}")
    transform = ImageTransform(image_size)
    if (out / "images").exists():
        shutil.rmtree(out / "images")
    width = len(str(len(chosen)))
    questions, mismatched = [], []
    bar = tqdm(total=len(chosen), desc="rendering questions", unit="image", disable=not progress)
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start:start + batch_size]
        images = load_inputs(batch, transform, table)
        top = torch.tensor([classes.index(r.top_class) if r.top_class in classes else -1 for r in batch])
        for row, index in zip(batch, top.tolist()):
            if index < 0:
                raise ValueError(f"{table}: image {row.id!r} has top_class {row.top_class!r}, not a class of {classifier}")
        mismatched += [f"{row.id} ({classes[now]} != {row.top_class})" for row, now in zip(batch, renderer.top_classes(images).tolist())
                       if classes[now] != row.top_class]  # fmt: skip
        figures = renderer(images, top)
        for i, row in enumerate(batch):
            qid = f"q{start + i + 1:0{width}d}"
            paths = {}
            for arm in ARMS:
                paths[arm] = f"images/{arm}/{qid}.png"
                save_png(figures[arm][i], out / paths[arm])
            options, answer = question_options(row, classes, option_rng)
            questions.append({
                "id": qid, "image_id": row.id, "image_path": str(Path(row.path).resolve()),
                "subset": row.bucket, "labels": list(row.labels), "predicted": list(row.predicted),
                "top_class": row.top_class, "top_prob": row.top_prob,
                "images": paths, "options": options, "answer": answer,
            })  # fmt: skip
        bar.update(len(batch))
    bar.close()
    if mismatched:
        warnings.warn(f"{len(mismatched)} image(s) have another top class at {image_size} px than in {table} (the table's class is "
                      f"explained and is the answer key): {', '.join(mismatched)}", stacklevel=2)  # fmt: skip
    arms = {arm: dict(texts.ARMS[arm]) for arm in ARMS}
    for arm, path in (introductions or {}).items():
        if arm not in arms:
            raise ValueError(f"unknown arm {arm!r} for an introduction; arms are {', '.join(ARMS)}")
        arms[arm]["introduction"] = texts.read_introduction(path)
    manifest = {
        "format": FORMAT,
        "name": name or out.name,
        "seed": seed,
        "question_text": texts.QUESTION_TEXT,
        "arm_order": list(ARMS),
        "arms": arms,
        "questions": questions,
        "source": {
            "predictions": str(table.resolve()), "classifier": str(Path(classifier).resolve()),
            "decoder": str(Path(decoder).resolve()), "image_size": image_size,
            "counts": {"correct": n_correct, "incorrect": n_incorrect},
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }  # fmt: skip
    path = write_manifest(manifest, out)
    write_preview(manifest, out / "preview.html")
    return path


def write_preview(manifest: dict, path: Path) -> None:
    """An HTML page for the researcher: every question, both arms, options and the key (never served to participants)."""
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{e(manifest['name'])}: preview</title>",
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:45vw;margin-right:1em}"
        ".key{font-weight:bold;color:#075}section{border-top:1px solid #ccc;padding:1em 0}</style>",
        f"<h1>{e(manifest['name'])}: {len(manifest['questions'])} questions (researcher preview, contains the answer key)</h1>",
    ]
    for q in manifest["questions"]:
        options = "".join(
            f"<li class='{'key' if o['id'] == q['answer'] else ''}'>{e(o['label'])}</li>" for o in q["options"]
        )
        images = "".join(f"<figure><img src='{e(q['images'][arm])}' alt='{e(arm)}'><figcaption>{e(manifest['arms'][arm]['title'])}"
                         "</figcaption></figure>" for arm in manifest["arm_order"])  # fmt: skip
        parts.append(
            f"<section><h2>{e(q['id'])} ({e(q['subset'])}ly classified) image {e(q['image_id'])}</h2>"
            f"<p>labels: {e(', '.join(q['labels']))}; predicted: {e(', '.join(q['predicted']) or '(none)')}; "
            f"top: {e(q['top_class'])} ({q['top_prob']:.2f})</p><div style='display:flex'>{images}</div><ol>{options}</ol></section>"
        )
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
