"""`pv survey simulate`: machine observers answer a study built by `pv survey build`, in four arms.

Design (fixed here before any PV-vs-Grad-CAM number was looked at; issue 14, section 3):

- An observer is a classifier O of another architecture than M (`OBSERVER_ARCH`, a wider narrow ResNet)
  and its own seed, trained on the observers' world (`pv world` writes it under WORLD/observer): the
  same classes drawn WITHOUT the planted correlations. It never sees explanations, M's outputs or M's
  training split. Its one augmentation, fixed in advance and applied identically whatever the arm:
  with probability `MASK_PROBABILITY` an image is masked on white, (1 - m) + m x, by a random smooth
  map m (`random_masks`: a rectified 8 x 8 Gaussian field, bilinearly upsampled, divided by its max),
  so masked pictures, as both explanation arms show, are not out of distribution.
- Arms: the study's two (pv, gradcam) and two controls no human study can afford: `input` (the photo
  alone) and `reconstruction` (the decoder's reconstruction of M's latent, unmasked). The observer
  looks at the right-hand panel of each arm's side-by-side picture (the explanation; for `input` the
  photo), resized to its input size.
- Answer: among the question's class options, the one with the highest probability under O (sigmoid);
  "I just can't tell" when that probability is below `THRESHOLD` = 0.5 (the multi-label decision
  threshold: O does not see that class). Fixed in advance, never tuned.
- Each (observer, arm) pair is one participant of the responses database, created and answered through
  `pv.survey.db` exactly as the web app does (question and option order from `pv.survey.order`), so
  `pv survey analyze --db OUT/responses.sqlite --manifest OUT` works unchanged. Attention checks are
  dropped from the simulated study (an observer cannot read instructions).

Writes OUT/manifest.json (the study with four arms), OUT/images/{pv,gradcam,input,reconstruction}/,
OUT/responses.sqlite, OUT/observers/observer_K.safetensors, OUT/answers.csv (one row per answer, with the
world's planted cause) and OUT/simulation.json (accuracy per arm, subset and planted cause, filler picks).
`--observers-only` trains just the observers (no study needed, e.g. beside `pv fit`); OUT/observers/settings.json
records what they were trained with, and a later run reuses them only when those settings match.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil
import time
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pv.atomic import atomic_path, write_text
from pv.survey import db
from pv.survey.errors import MissingFileError, StudyError
from pv.survey.manifest import load_manifest, write_manifest
from pv.survey.order import Layouts
from pv.survey.questions import CANT_TELL_ID

THRESHOLD = 0.5
OBSERVER_ARCH = "narrow_resnet_wide"
MASK_PROBABILITY = 0.5
ARMS = ("pv", "gradcam", "input", "reconstruction")
CONTROL_TEXTS = {
    "input": {"title": "Input only (control)", "introduction": ["The photo alone, twice: no explanation (a control arm of the simulation)."]},
    "reconstruction": {"title": "Reconstruction only (control)",
                       "introduction": ["The photo and the decoder's reconstruction of the model's latent, unmasked (a control arm of the simulation)."]},
}  # fmt: skip


# ------------------------------------------------------------------ observers ----


def random_masks(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 1, size, size) smooth maps in [0, 1] with max 1: rectified 8 x 8 Gaussian fields, upsampled."""
    field = torch.randn(count, 1, 8, 8, generator=generator) + torch.rand(count, 1, 1, 1, generator=generator) * 1.5 - 0.5
    maps = F.interpolate(field.clamp(min=0), size=(size, size), mode="bilinear", align_corners=False)
    peak = maps.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp(min=1e-8), torch.ones_like(maps))


def load_split(root: Path, split: str, class_names: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A VOC split as (images uint8 (N, 3, S, S), labels (N, C)), held in memory."""
    from pv.data import ImageTransform, voc_dataset

    data = voc_dataset(root, ImageTransform(size), year="2007", image_set=split, classes=class_names)
    images = torch.stack([(data[i]["image"] * 255).round().to(torch.uint8) for i in range(len(data))])
    return images, data.labels.clone()


def train_observer(images: torch.Tensor, labels: torch.Tensor, class_names: list[str], seed: int, epochs: int = 3,
                   batch_size: int = 64, lr: float = 3e-3, arch: str = OBSERVER_ARCH):  # fmt: skip
    """A multi-label observer (pv.models.Classifier) trained with BCE and the fixed masking augmentation."""
    from pv.models import Classifier

    torch.manual_seed(seed)
    model = Classifier(arch, num_classes=len(class_names), weights=None, class_names=class_names, input_size=images.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            x = images[index].float() / 255  # (B, 3, S, S)
            flip = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            masked = (torch.rand(len(x), 1, 1, 1, generator=generator) < MASK_PROBABILITY).float()
            m = random_masks(len(x), x.shape[-1], generator)
            x = masked * ((1 - m) + m * x) + (1 - masked) * x
            loss = F.binary_cross_entropy_with_logits(model(x), labels[index].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def observer_map(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean AP of an observer on held-out images (classes with a positive)."""
    from sklearn.metrics import average_precision_score

    probs = torch.cat([model(images[i:i + 256].float() / 255).sigmoid() for i in range(0, len(images), 256)]).numpy()
    present = labels.sum(0) > 0
    return float(np.mean([average_precision_score(labels[:, c].numpy(), probs[:, c]) for c in range(labels.shape[1]) if present[c]]))


def observers(world: Path, out: Path, class_names: list[str], count: int, epochs: int, size: int, train_limit: int | None, log=print) -> list:
    """`count` observers (seeds 0..count-1), trained once and cached in OUT/observers/."""
    from safetensors.torch import load_file, save_file

    from pv.models import Classifier

    folder = out / "observers"
    folder.mkdir(parents=True, exist_ok=True)
    # What the cached observers were trained with: a cache made with other settings is retrained, not reused.
    settings = {"arch": OBSERVER_ARCH, "epochs": epochs, "size": size, "train_limit": train_limit, "world": str(world.resolve())}
    settings_path = folder / "settings.json"
    cached = settings_path.is_file() and json.loads(settings_path.read_text()) == settings
    write_text(settings_path, json.dumps(settings, indent=2) + "\n")
    models, data, held = [], None, None
    for seed in range(count):
        path = folder / f"observer_{seed}.safetensors"  # weights others may reuse: safetensors, no pickle
        if path.is_file() and cached:
            state = load_file(path)
            model = Classifier(OBSERVER_ARCH, num_classes=len(class_names), weights=None, class_names=class_names, input_size=size)
            model.load_state_dict(state)
            models.append(model.eval())
            continue
        if data is None:
            root = world / "observer"
            if not (root / "VOCdevkit").is_dir():
                raise MissingFileError(f"{root}/VOCdevkit not found: --world must be a folder written by `pv world`")
            data, held = load_split(root, "train", class_names, size), load_split(root, "val", class_names, size)
            if train_limit:
                data = (data[0][:train_limit], data[1][:train_limit])
        start = time.perf_counter()
        model = train_observer(*data, class_names, seed=seed, epochs=epochs)
        with atomic_path(path) as tmp:
            save_file(model.state_dict(), tmp)
        log(f"observer {seed}: {OBSERVER_ARCH}, {epochs} epochs on {len(data[0])} unbiased images in {time.perf_counter() - start:.0f} s, "
            f"held-out mAP {observer_map(model, *held):.3f}")  # fmt: skip
        models.append(model)
    return models


# ------------------------------------------------------------------ the four-arm study ----


def train_observers(world: str | Path, out: str | Path, n_observers: int = 5, epochs: int = 3, size: int = 64,
                    train_limit: int | None = None, log=print) -> list:  # fmt: skip
    """Only train (and cache in OUT/observers/) the observers: they need the world, not the study, so a
    pipeline can train them while M and the decoder train; a later `simulate` with the same settings reuses them."""
    world, out = Path(world), Path(out)
    if not (world / "world.json").is_file():
        raise MissingFileError(f"{world / 'world.json'} not found: --world must be a folder written by `pv world`")
    class_names = json.loads((world / "world.json").read_text())["class_names"]
    return observers(world, out, class_names, n_observers, epochs, size, train_limit, log)


def right_panel(path: Path) -> torch.Tensor:
    """The explanation panel (right square) of a side-by-side study image: (3, P, P) in [0, 1]."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    height = array.shape[0]
    return torch.from_numpy(array[:, -height:]).permute(2, 0, 1)


def four_arm_study(study: Path, out: Path, log=print) -> dict:
    """OUT/manifest.json: the study's questions with the control arms' images added (attention checks dropped)."""
    from pv.data import ImageTransform, load_image
    from pv.explain import PerceptionVisualizer
    from pv.explain.figures import save_png
    from pv.models import Classifier, load_decoder

    manifest = load_manifest(study)
    if not {"pv", "gradcam"} <= set(manifest["arm_order"]):
        raise StudyError(f"{study}: a study with the arms pv and gradcam is needed, it has {manifest['arm_order']}")
    source = manifest.get("source", {})
    classifier = Classifier.from_checkpoint(source["classifier"]).eval()
    decoder, encoder_config = load_decoder(source["decoder"])
    visualizer = PerceptionVisualizer(classifier, decoder.eval(), encoder_config, decoder_name=f"decoder {source['decoder']}")
    input_size = manifest.get("presentation", {}).get("input_size") or classifier.input_size
    if (out / "images").is_dir():
        shutil.rmtree(out / "images")
    questions = []
    for q in manifest["questions"]:
        panel = right_panel(study / q["images"]["pv"])  # only for its size
        size = panel.shape[-1]
        photo = ImageTransform(input_size)(load_image(q["image_path"]), q["image_path"])[None]  # (1, 3, S, S)
        reconstruction = visualizer.reconstruct(photo)  # (1, 3, S, S)
        photo_panel = F.interpolate(photo, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)[0]
        rec_panel = F.interpolate(reconstruction, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)[0]
        gap = torch.ones(3, size, max(2, size // 28))
        images = {}
        for arm in ("pv", "gradcam"):
            images[arm] = f"images/{arm}/{q['id']}.png"
            (out / images[arm]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(study / q["images"][arm], out / images[arm])
        for arm, right in (("input", photo_panel), ("reconstruction", rec_panel)):
            images[arm] = f"images/{arm}/{q['id']}.png"
            save_png(torch.cat([photo_panel, gap, right], dim=2), out / images[arm])
        questions.append({**q, "images": images})
    simulated = {**manifest, "name": f"{manifest['name']} (simulated observers)", "arm_order": list(ARMS),
                 "arms": {**{arm: manifest["arms"][arm] for arm in ("pv", "gradcam")}, **CONTROL_TEXTS},
                 "questions": questions, "attention_checks": [],
                 "simulation": {"study": str(study.resolve()), "threshold": THRESHOLD, "observer_arch": OBSERVER_ARCH,
                                "mask_probability": MASK_PROBABILITY}}  # fmt: skip
    write_manifest(simulated, out)
    log(f"wrote the four-arm study {out / 'manifest.json'} ({len(questions)} questions)")
    return simulated


def answer(probabilities: torch.Tensor, question: dict, class_names: list[str], threshold: float = THRESHOLD) -> str:
    """The option id an observer picks: the most probable offered class, or "I just can't tell" below `threshold`."""
    offered = [o for o in question["options"] if o.get("class") is not None]
    scores = [float(probabilities[class_names.index(o["class"])]) for o in offered]
    best = int(np.argmax(scores))
    return offered[best]["id"] if scores[best] >= threshold else CANT_TELL_ID


def simulate(study: str | Path, world: str | Path, out: str | Path, n_observers: int = 5, epochs: int = 3,
             train_limit: int | None = None, log=print) -> dict:  # fmt: skip
    """Run the simulated study; return simulation.json's content."""
    study, world, out = Path(study), Path(world), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = four_arm_study(study, out, log)
    class_names = json.loads((world / "world.json").read_text())["class_names"] if (world / "world.json").is_file() else None
    if class_names is None:
        raise MissingFileError(f"{world / 'world.json'} not found: --world must be a folder written by `pv world`")
    size = int(manifest.get("presentation", {}).get("input_size") or 64)
    models = observers(world, out, class_names, n_observers, epochs, size, train_limit, log)
    db_path = out / "responses.sqlite"
    for stale in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"), db_path.with_name(db_path.name + ".keys")):
        stale.unlink(missing_ok=True)
    db.init_db(db_path, manifest)
    layouts = Layouts(manifest)
    by_id = {q["id"]: q for q in manifest["questions"]}
    panels = {arm: torch.stack([right_panel(out / q["images"][arm]) for q in manifest["questions"]]) for arm in ARMS}
    probs = {}
    with torch.no_grad():
        for k, model in enumerate(models):
            for arm in ARMS:
                x = F.interpolate(panels[arm], size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
                probs[k, arm] = model(x).sigmoid()  # (Q, C)
    index = {q["id"]: i for i, q in enumerate(manifest["questions"])}
    rows = []
    with closing(db.connect(db_path)) as conn:
        for k in range(len(models)):
            for arm in ARMS:
                participant = db.create_participant(conn, list(ARMS), layouts)
                if participant.arm != arm:
                    raise StudyError(f"{db_path}: participant {participant.seq} was given arm {participant.arm}, expected {arm}")
                order = participant.question_order or [q["id"] for q in manifest["questions"]]
                for qid in order:
                    question = by_id[qid]
                    chosen = answer(probs[k, arm][index[qid]], question, class_names)
                    db.mark_shown(conn, participant.id, qid)
                    status = db.record_answer(conn, participant.id, order, qid, chosen, participant.option_order[qid].index(chosen))
                    if status != "recorded":
                        raise StudyError(f"{db_path}: answer of observer {k} to {qid} was {status}")
                    rows.append({"observer": k, "arm": arm, "question": qid, "subset": question["subset"], "option": chosen,
                                 "class": next((o["class"] for o in question["options"] if o["id"] == chosen), None),
                                 "correct": chosen == question["answer"], "image_id": question["image_id"]})  # fmt: skip
    summary = summarize_answers(rows, manifest, world)
    summary.update(threshold=THRESHOLD, observer_arch=OBSERVER_ARCH, observers=len(models), epochs=epochs, database=str(db_path))
    write_text(out / "simulation.json", json.dumps(summary, indent=2) + "\n")
    write_text(out / "answers.csv", answers_csv(rows, summary["causes_by_image"]))
    return summary


def summarize_answers(rows: list[dict], manifest: dict, world: Path) -> dict:
    """Accuracy per arm and subset, per arm and planted cause, and the filler-pick control per arm."""
    truth = {}
    if (world / "truth.json").is_file():
        truth = {r["id"]: r for r in json.loads((world / "truth.json").read_text())}
    by_id = {q["id"]: q for q in manifest["questions"]}
    causes = {q["image_id"]: truth.get(q["image_id"], {}).get("cause", "unknown") for q in manifest["questions"]}
    groups: dict = defaultdict(list)
    filler: dict = defaultdict(list)
    for row in rows:
        q = by_id[row["question"]]
        groups["subset", row["arm"], row["subset"]].append(row["correct"])
        groups["cause", row["arm"], f"{row['subset']}/{causes[row['image_id']]}"].append(row["correct"])
        if row["subset"] == "correct":  # a class that is neither M's answer nor in the photo, chosen on a right prediction
            filler[row["arm"]].append(row["class"] is not None and row["class"] != q["top_class"] and row["class"] not in q["labels"])
    summary: dict = {"accuracy": {}, "accuracy_by_cause": {}, "filler_pick": {}, "cant_tell": {}}
    for (kind, arm, key), values in sorted(groups.items()):
        target = summary["accuracy" if kind == "subset" else "accuracy_by_cause"].setdefault(arm, {})
        target[key] = {"mean": float(np.mean(values)), "answers": len(values)}
    for arm, values in filler.items():
        summary["filler_pick"][arm] = float(np.mean(values)) if values else float("nan")
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        summary["cant_tell"][arm] = float(np.mean([r["option"] == CANT_TELL_ID for r in mine])) if mine else float("nan")
    summary["causes_by_image"] = causes
    return summary


def answers_csv(rows: list[dict], causes: dict[str, str]) -> str:
    buffer = io.StringIO(newline="")
    columns = ["observer", "arm", "question", "image_id", "subset", "cause", "option", "class", "correct"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{c: row.get(c) for c in columns}, "cause": causes.get(row["image_id"], "unknown"), "correct": int(row["correct"])})
    return buffer.getvalue()


# ------------------------------------------------------------------ command ----


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", help="study folder made by `pv survey build` (arms pv and gradcam); not needed with --observers-only")
    parser.add_argument("--world", required=True, help="folder written by `pv world` (observers train on WORLD/observer)")
    parser.add_argument("--out", required=True, help="folder for the four-arm study, responses.sqlite, observers and summaries")
    parser.add_argument("--observers", type=int, default=5, help="observer seeds = participants per arm")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per observer")
    parser.add_argument("--train-limit", type=int, default=None, help="train observers on the first N observer images only")
    parser.add_argument("--observers-only", action="store_true",
                        help="only train the observers into OUT/observers (no study needed); a later run with the same "
                             "--world, --out, --epochs and --train-limit reuses them")
    parser.add_argument("--input-size", type=int, default=64, help="with --observers-only: the observers' input size in px (the study's M input size)")


def run(args: argparse.Namespace) -> int:
    if args.observers < 1 or args.epochs < 1:
        raise StudyError(f"--observers and --epochs must be >= 1, got {args.observers}, {args.epochs}")
    if args.observers_only:
        train_observers(args.world, args.out, args.observers, args.epochs, args.input_size, args.train_limit)
        print(f"Wrote {args.observers} observers to {args.out}/observers; answer a study with: pv survey simulate --study STUDY "
              f"--world {args.world} --out {args.out} --observers {args.observers} --epochs {args.epochs}")  # fmt: skip
        return 0
    if not args.study:
        raise StudyError("--study is required (a folder made by `pv survey build`), unless --observers-only is given")
    summary = simulate(args.study, args.world, args.out, args.observers, args.epochs, args.train_limit)
    for arm in ARMS:
        accuracy = summary["accuracy"].get(arm, {})
        cells = ", ".join(f"{subset} {100 * value['mean']:.1f}%" for subset, value in accuracy.items())
        print(f"{arm:<15} {cells}; filler picks {100 * summary['filler_pick'].get(arm, float('nan')):.1f}%")
    print(f"Wrote {args.out}/responses.sqlite; analyse it with: pv survey analyze --db {args.out}/responses.sqlite "
          f"--manifest {args.out} --out {args.out}/report")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (the same as `pv survey simulate`)."""
    parser = argparse.ArgumentParser(prog="pv survey simulate", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
