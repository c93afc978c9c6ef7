"""`pv survey build`: select questions, render both arms' images and write a self-contained study folder.

Each arm's image is the photo (left) beside its explanation of the model's top class (right), same size
and layout. The two arms differ only in content, as in the paper ("the structure of the survey is
identical for both PV and Grad-CAM"): the Grad-CAM map m of the top class at the decoder's latent layer
masks the decoder's reconstruction y in the PV arm, (1 - m) + m y, and the photo x in the Grad-CAM arm,
(1 - m) + m x (the authors' survey images), m min-max scaled to [0, 1] as theirs were (`--normalization max`:
divided by its maximum) and upsampled bilinearly. `--gradcam-presentation overlay` shows a heat-map overlay
instead; the manifest records which. Everything comes from `pv.explain.PerceptionVisualizer`, which
also refuses a decoder trained on another classifier's latent (`--allow-encoder-mismatch`). Question images the
decoder or the classifier trained on are refused (`pv.survey.training_images`, `--allow-training-images`).

The folder holds all a host needs: manifest.json (questions, key, texts, settings, platform),
images/ and preview.html (the researcher's view, with the key; never served).
"""
from __future__ import annotations

import argparse
import datetime as dt
import html
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from pv.atomic import write_text
from pv.data import ImageTransform, load_image

from pv.explain import NORMALIZATIONS, PerceptionVisualizer, heatmap_overlay, perception_visualization
from pv.explain.figures import save_png
from pv.models import Classifier, load_decoder
from pv.models.precision import autocast, describe_precision, prepare_model, resolve_precision
from pv.survey import texts
from pv.survey.manifest import FORMAT, MANIFEST_NAME, QUESTION_ORDERS, estimate_minutes, write_manifest
from pv.survey.platform import PRESETS, platform_config
from pv.survey.questions import CANT_TELL_ID, CANT_TELL_LABEL, FILLERS, Prediction, display_name, question_options, read_predictions
from pv.survey.strata import STRATIFY_MODES, check_stratify, choose_questions, question_fields
from pv.survey.errors import MissingFileError, StudyError
from pv.survey.training_images import ALLOW_FLAG, check_training_images

ARMS = ("pv", "gradcam")


class ArmRenderer:
    """Images (B, 3, S, S) in [0, 1] at the classifier's input size + top-class indices -> one side-by-side
    figure (B, 3, P, 2P + gap) per arm at the panel size P."""

    def __init__(self, visualizer: PerceptionVisualizer, gradcam_presentation: str = "masked", colormap: str = "jet", alpha: float = 0.5):
        if gradcam_presentation not in texts.GRADCAM_PRESENTATIONS:
            raise StudyError(f"--gradcam-presentation must be one of {', '.join(texts.GRADCAM_PRESENTATIONS)}, got {gradcam_presentation!r}")
        self.visualizer = visualizer
        self.presentation, self.colormap, self.alpha = gradcam_presentation, colormap, alpha

    def __call__(self, images: torch.Tensor, top: torch.Tensor, panels: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, S, S) for the model, panels (B, 3, P, P) the same photos at the panel size."""
        result = self.visualizer(images, top)  # reconstruction (B, 3, S, S), saliency (B, 1, 1, S, S)
        size = panels.shape[-2:]
        mask = resize(result["saliency"][:, 0], size).clamp(0, 1)  # (B, 1, P, P)
        reconstruction = resize(result["reconstruction"], size).clamp(0, 1)  # (B, 3, P, P)
        explanations = {"pv": perception_visualization(reconstruction, mask)}
        if self.presentation == "masked":
            explanations["gradcam"] = perception_visualization(panels, mask)  # the photo where the model looks, white elsewhere
        else:
            explanations["gradcam"] = heatmap_overlay(panels, mask, self.colormap, self.alpha)
        return {arm: side_by_side(panels, explained) for arm, explained in explanations.items()}


def resize(images: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of (B, C, H, W); a no-op at the same size."""
    if images.shape[-2:] == tuple(size):
        return images
    return F.interpolate(images.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def side_by_side(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) twice -> (B, 3, S, 2S + gap) with a white gap of S // 28 (at least 2) pixels."""
    gap = torch.ones(*left.shape[:3], max(2, left.shape[-1] // 28), dtype=left.dtype)
    return torch.cat([left, gap, right], dim=3)


def load_inputs(rows: list[Prediction], transform: ImageTransform, table: Path) -> torch.Tensor:
    """The question images as one batch (B, 3, S, S)."""
    images = []
    for row in rows:
        if not row.path or not Path(row.path).is_file():
            raise MissingFileError(f"{table}: image {row.id!r} has path {row.path!r}, which does not exist")
        images.append(transform(load_image(row.path), name=row.path))
    return torch.stack(images)


def attention_image(instruction: str, panel_size: int) -> torch.Tensor:
    """A white (3, P, 2P + gap) picture with the instruction written on it (the same size as a question's image)."""
    width = 2 * panel_size + max(2, panel_size // 28)
    picture = Image.new("RGB", (width, panel_size), "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(8, panel_size // 9))
    words, lines = instruction.split(), [""]
    for word in words:
        trial = f"{lines[-1]} {word}".strip()
        if draw.textlength(trial, font=font) > width * 0.9 and lines[-1]:
            lines.append(word)
        else:
            lines[-1] = trial
    text = "\n".join(lines)
    box = draw.multiline_textbbox((0, 0), text, font=font, align="center")
    draw.multiline_text(((width - box[2]) / 2, (panel_size - box[3]) / 2), text, fill="black", font=font, align="center")
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255


def attention_checks(count: int, classes: list[str], panel_size: int, out: Path, placement: str, n_questions: int, seed: int) -> list[dict]:
    """`count` instructed-answer checks: a picture naming the option to choose among the usual five options."""
    rng = random.Random(f"attention-{seed}")
    checks = []
    for k in range(count):
        names = rng.sample(sorted(set(classes)), 4)
        options = [{"id": f"o{i + 1}", "class": name, "label": display_name(name)} for i, name in enumerate(names)]
        options.append({"id": CANT_TELL_ID, "class": None, "label": CANT_TELL_LABEL})
        answer = options[rng.randrange(4)]
        check_id = f"a{k + 1}"
        path = f"images/attention/{check_id}.png"
        save_png(attention_image(f"Attention check: please choose \u201c{answer['label']}\u201d below.", panel_size), out / path)
        position = None if placement == "random" else -(-(k + 1) * (n_questions + count) // (count + 1))  # evenly spread, 1-based
        checks.append({
            "id": check_id, "image": path, "text": f"Please choose \u201c{answer['label']}\u201d.", "question_text": texts.ATTENTION_QUESTION_TEXT,
            "options": options, "answer": answer["id"], "position": position,
        })  # fmt: skip
    return checks


def build_study(
    analysis: str | Path,
    classifier: str | Path,
    decoder: str | Path,
    out: str | Path,
    n_correct: int = 16,
    n_incorrect: int = 14,
    seed: int = 0,
    panel_size: int = 224,
    input_size: int | None = None,
    name: str | None = None,
    introductions: dict[str, str | Path] | None = None,
    overwrite: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    gradcam_presentation: str = "masked",
    question_order: str = "random",
    allow_encoder_mismatch: bool = False,
    attention: int = 0,
    attention_placement: str = "spread",
    platform: dict | None = None,
    resize_mode: str = "whole",
    precision: str = "32",
    stratify: str = "none",
    world: str | Path | None = None,
    normalization: str = "minmax",
    allow_training_images: bool = False,
    fillers: str = "all",
) -> Path:
    """Write STUDY/manifest.json, STUDY/images/{pv,gradcam,attention}/*.png and STUDY/preview.html; return the manifest path.

    `input_size` (default: the classifier checkpoint's) is what the model sees; `panel_size` is the side
    of each panel participants see. `precision` "32" (default: study images exactly reproducible), "bf16"
    or "auto" (bf16 autocast where this CPU computes it natively). `stratify` "cause" draws the wrong questions by
    planted cause from `world` (`pv.survey.strata`); with "none" (the paper's buckets) a `world` only records causes.
    `normalization` scales the Grad-CAM map to [0, 1]: "minmax" (default: the authors' survey images) or "max".
    Question images the decoder or classifier trained on are refused unless `allow_training_images` (`pv.survey.training_images`).
    """
    out = Path(out)
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise StudyError(f"{out / MANIFEST_NAME} already exists; pass --overwrite to rebuild the study (its answer key changes)")
    if question_order not in QUESTION_ORDERS:
        raise StudyError(f"--question-order must be one of {', '.join(QUESTION_ORDERS)}, got {question_order!r}")
    if attention < 0 or attention_placement not in ("spread", "random"):
        raise StudyError(f"--attention-checks must be >= 0 and --attention-placement spread or random, got {attention}, {attention_placement!r}")
    if normalization not in NORMALIZATIONS:
        raise StudyError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    check_stratify(stratify, world)
    table = Path(analysis) / "predictions.csv" if Path(analysis).is_dir() else Path(analysis)
    rows, csv_classes = read_predictions(table)
    precision = resolve_precision(precision, "cpu", method="gradcam")
    model = prepare_model(Classifier.from_checkpoint(classifier), precision, "cpu")
    decoder_model, encoder_config = load_decoder(decoder)
    decoder_model = prepare_model(decoder_model, precision, "cpu")
    classes = model.class_names
    if csv_classes and csv_classes != classes:
        raise StudyError(f"{table}: prob_<class> columns {csv_classes} do not match the classifier's classes {classes}")
    chosen, selection, causes = choose_questions(rows, n_correct, n_incorrect, seed, stratify, world)
    trained_on = check_training_images(chosen, {"decoder": decoder, "classifier": classifier}, allow_training_images)
    visualizer = PerceptionVisualizer(model, decoder_model.eval(), encoder_config, decoder_name=f"decoder {decoder}", normalization=normalization,
                                      classifier_name=f"classifier {classifier}", allow_encoder_mismatch=allow_encoder_mismatch)  # fmt: skip
    renderer = ArmRenderer(visualizer, gradcam_presentation)
    input_size = input_size or model.input_size
    transform, panel_transform = ImageTransform(input_size, resize=resize_mode), ImageTransform(panel_size, resize=resize_mode)
    option_rng = random.Random(f"options-{seed}")
    if (out / "images").is_dir():
        shutil.rmtree(out / "images")
    width = len(str(len(chosen)))
    questions, mismatched = [], []
    bar = tqdm(total=len(chosen), desc="rendering questions", unit="image", disable=not progress)
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start:start + batch_size]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*smaller than.*upscaled")  # tiny panels of small photos are fine
            images = load_inputs(batch, transform, table)
            panels = images if panel_size == input_size else load_inputs(batch, panel_transform, table)
        for row in batch:
            if row.top_class not in classes:
                raise StudyError(f"{table}: image {row.id!r} has top_class {row.top_class!r}, not a class of {classifier}")
        top = torch.tensor([classes.index(r.top_class) for r in batch])
        with autocast(precision, "cpu"):
            now_top = visualizer.top_classes(images, 1)[:, 0].tolist()
            figures = renderer(images, top, panels)
        mismatched += [f"{row.id} ({classes[now]} != {row.top_class})" for row, now in zip(batch, now_top) if classes[now] != row.top_class]
        for i, row in enumerate(batch):
            qid = f"q{start + i + 1:0{width}d}"
            paths = {}
            for arm in ARMS:
                paths[arm] = f"images/{arm}/{qid}.png"
                save_png(figures[arm][i], out / paths[arm])
            options, answer = question_options(row, classes, option_rng, fillers=fillers)
            questions.append({
                "id": qid, "image_id": row.id, "image_path": str(Path(row.path).resolve()),
                **question_fields(row, causes), "labels": list(row.labels), "predicted": list(row.predicted),
                "top_class": row.top_class, "top_prob": row.top_prob,
                "images": paths, "options": options, "answer": answer,
            })  # fmt: skip
        bar.update(len(batch))
    bar.close()
    if mismatched:
        warnings.warn(f"{len(mismatched)} image(s) have another top class at {input_size} px than in {table} (the table's class is "
                      f"explained and is the answer key): {', '.join(mismatched)}", stacklevel=2)  # fmt: skip
    arms = texts.arm_texts(gradcam_presentation)
    for arm, path in (introductions or {}).items():
        if arm not in arms:
            raise StudyError(f"unknown arm {arm!r} for an introduction; arms are {', '.join(ARMS)}")
        arms[arm]["introduction"] = texts.read_introduction(path)
    checks = attention_checks(attention, classes, panel_size, out, attention_placement, len(questions), seed)
    manifest = {
        "format": FORMAT,
        "name": name or out.name,
        "seed": seed,
        "question_text": texts.QUESTION_TEXT,
        "arm_order": list(ARMS),
        "arms": arms,
        "questions": questions,
        "question_order": question_order,
        "attention_checks": checks,
        "presentation": {"pv": "masked reconstruction (1 - m) + m y", "gradcam": gradcam_presentation,
                         "panel_size": panel_size, "input_size": input_size, "resize": resize_mode, "precision": precision,
                         "normalization": normalization, "upsampling": "bilinear"},  # fmt: skip
        "estimated_minutes": estimate_minutes(len(questions) + len(checks)),
        "selection": selection,
        "fillers": fillers,
        "training_images": trained_on,
        "source": {
            "predictions": str(table.resolve()), "classifier": str(Path(classifier).resolve()),
            "decoder": str(Path(decoder).resolve()), "activation": model.activation,
            "counts": {"correct": n_correct, "incorrect": n_incorrect, "attention": attention},
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }  # fmt: skip
    if platform:
        manifest["platform"] = platform
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
        f"<p>Question order: {e(manifest.get('question_order', 'fixed'))} per participant; Grad-CAM shown "
        f"{e(str(manifest.get('presentation', {}).get('gradcam', 'as a heat-map overlay')))}.</p>",
    ]
    for q in manifest["questions"]:
        options = "".join(f"<li class='{'key' if o['id'] == q['answer'] else ''}'>{e(o['label'])}</li>" for o in q["options"])
        images = "".join(f"<figure><img src='{e(q['images'][arm])}' alt='{e(arm)}'><figcaption>{e(manifest['arms'][arm]['title'])}"
                         "</figcaption></figure>" for arm in manifest["arm_order"])  # fmt: skip
        parts.append(
            f"<section><h2>{e(q['id'])} ({e(q['subset'])}ly classified{'; cause ' + e(q['cause']) if 'cause' in q else ''}) "
            f"image {e(q['image_id'])}</h2>"
            f"<p>labels: {e(', '.join(q['labels']))}; predicted: {e(', '.join(q['predicted']) or '(none)')}; "
            f"top: {e(q['top_class'])} ({q['top_prob']:.2f})</p><div style='display:flex'>{images}</div><ol>{options}</ol></section>"
        )
    for c in manifest.get("attention_checks", []):
        options = "".join(f"<li class='{'key' if o['id'] == c['answer'] else ''}'>{e(o['label'])}</li>" for o in c["options"])
        where = "random position" if c.get("position") is None else f"position {c['position']}"
        parts.append(f"<section><h2>{e(c['id'])} (attention check, {where})</h2><img src='{e(c['image'])}' alt='check'><ol>{options}</ol></section>")
    write_text(path, "\n".join(parts) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--analysis", required=True, help="folder holding predictions.csv from `pv analyze` (or the CSV itself)")
    parser.add_argument("--classifier", help="classifier checkpoint")
    parser.add_argument("--arch", help="or a classifier from a model zoo (pv explain --help), e.g. tf_efficientnet_lite0; it is written to "
                        "OUT/classifier.ckpt, which the manifest names")  # fmt: skip
    parser.add_argument("--weights", default="none", help="weights for --arch: packaged, pretrained, a torchvision enum, a .safetensors / .pth file, or none")
    parser.add_argument("--decoder", required=True, help="PV decoder checkpoint trained on the classifier's latent")
    parser.add_argument("--out", required=True, help="study folder to create, e.g. survey/studies/NAME")
    parser.add_argument("--correct", type=int, default=16, help="questions from correctly classified images (the paper: 16)")
    parser.add_argument("--incorrect", type=int, default=14, help="questions from wrongly classified images (the paper: 14)")
    parser.add_argument("--seed", type=int, default=0, help="seed for question selection and options")
    parser.add_argument("--panel-size", type=int, default=224, help="side of each panel participants see, in pixels")
    parser.add_argument("--input-size", type=int, default=None, help="image side the classifier sees (default: from its checkpoint)")
    parser.add_argument("--resize", choices=("whole", "crop"), default="whole",
                        help="whole: resize the whole photo to a square (the authors'); crop: short side + centre crop")  # fmt: skip
    parser.add_argument("--gradcam-presentation", choices=texts.GRADCAM_PRESENTATIONS, default="masked",
                        help="masked: the photo where Grad-CAM looks, white elsewhere, as PV masks the reconstruction "
                             "(the authors' survey); overlay: a jet heat-map over the photo")  # fmt: skip
    parser.add_argument("--question-order", choices=QUESTION_ORDERS, default="random", help="question order per participant (stored with each)")
    parser.add_argument("--attention-checks", type=int, default=0, help="instructed-answer questions to add (excluded from accuracy)")
    parser.add_argument("--attention-placement", choices=("spread", "random"), default="spread",
                        help="spread: fixed, evenly spaced positions; random: a random position per participant")  # fmt: skip
    parser.add_argument("--platform", choices=(*PRESETS, "none"), default="none", help="recruitment platform whose URL parameters the study reads")
    parser.add_argument("--completion-code", default=None, help="code shown at the end (and put in the platform's completion URL)")
    parser.add_argument("--completion-url", default=None, help="where participants go at the end (default: the platform's, with the code)")
    parser.add_argument("--require-platform-id", action="store_true", help="refuse visitors who arrive without the platform's ID")
    parser.add_argument("--precision", choices=("auto", "32", "bf16"), default="32",
                        help="32: exactly reproducible study images; auto: bf16 autocast where the CPU computes it natively")  # fmt: skip
    parser.add_argument("--stratify", choices=STRATIFY_MODES, default="none",
                        help="none: the paper's buckets (wrong = no true label predicted); cause: for a world of `pv world`, wrong = the top "
                             "class is not a true label, drawn equally from each planted cause (needs --world)")  # fmt: skip
    parser.add_argument("--world", default=None, help="folder written by `pv world`: each question records its planted cause")
    parser.add_argument("--allow-encoder-mismatch", action="store_true",
                        help="render even when the decoder was trained on another classifier's latent (a warning instead of an error)")  # fmt: skip
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default="minmax",
                        help="Grad-CAM map scaled to [0, 1] by (m - min) / (max - min) (minmax: the authors' survey images, Keras "
                             "array_to_img(scale=True)) or by m / max (max: the authors' Grad-CAM function; an all-positive map "
                             "then never reaches 0). pv upsamples the map bilinearly; the authors PIL-resized a uint8 map")  # fmt: skip
    parser.add_argument("--fillers", choices=FILLERS, default="all",
                        help="options besides the top class and other true labels: any other class (all: the authors', M's other "
                             "predictions included) or only classes M did not predict for the image (unpredicted)")  # fmt: skip
    parser.add_argument(ALLOW_FLAG, action="store_true",
                        help="build even when question images are among those the decoder or classifier trained on "
                             "(their checkpoints' training records; a warning instead of an error, recorded in the manifest)")  # fmt: skip
    parser.add_argument("--name", help="study name shown in reports (default: the folder name)")
    parser.add_argument("--intro-pv", help="plain-text file replacing the PV arm's introduction (paragraphs split by blank lines)")
    parser.add_argument("--intro-gradcam", help="plain-text file replacing the Grad-CAM arm's introduction")
    parser.add_argument("--overwrite", action="store_true", help="rebuild an existing study (its answer key changes)")


def zoo_classifier_checkpoint(args: argparse.Namespace) -> Path:
    """--arch/--weights as the study's own checkpoint OUT/classifier.ckpt (what the manifest and `pv survey simulate` read)."""
    from pv.models.loading import load_classifier, save_classifier

    if args.classifier:
        raise StudyError("Give either --classifier or --arch, not both")
    out = Path(args.out)
    if (out / MANIFEST_NAME).exists() and not args.overwrite:
        raise StudyError(f"{out / MANIFEST_NAME} already exists; pass --overwrite to rebuild the study (its answer key changes)")
    try:
        model = load_classifier(arch=args.arch, weights=args.weights)
        return save_classifier(model, out / "classifier.ckpt", {"arch": args.arch, "weights": args.weights})
    except ValueError as err:  # an unknown arch, a ViT or wrapped model (no pooled linear head)
        raise StudyError(f"--arch {args.arch}: {err}") from None


def run(args: argparse.Namespace) -> int:
    intros = {arm: path for arm, path in (("pv", args.intro_pv), ("gradcam", args.intro_gradcam)) if path}
    platform = platform_config(args.platform, args.completion_code, args.completion_url, args.require_platform_id)
    print(describe_precision(args.precision, "cpu", "gradcam"))
    classifier = zoo_classifier_checkpoint(args) if args.arch else args.classifier
    if not classifier:
        raise StudyError("Give a classifier: --classifier CKPT, or --arch NAME [--weights ...]")
    path = build_study(
        args.analysis, classifier, args.decoder, args.out, args.correct, args.incorrect, args.seed, args.panel_size,
        args.input_size, args.name, intros, args.overwrite, gradcam_presentation=args.gradcam_presentation,
        question_order=args.question_order, allow_encoder_mismatch=args.allow_encoder_mismatch, attention=args.attention_checks,
        attention_placement=args.attention_placement, platform=platform, resize_mode=args.resize, precision=args.precision,
        stratify=args.stratify, world=args.world, normalization=args.normalization, allow_training_images=args.allow_training_images,
        fillers=args.fillers,
    )  # fmt: skip
    print(f"Wrote {path} and {path.parent / 'preview.html'} (researcher preview with the answer key); check it with `pv survey check {path.parent}`")
    return 0
