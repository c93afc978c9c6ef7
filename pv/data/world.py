"""A generated world whose truth is known: shapes on backgrounds, with planted misperceptions.

Design (fixed here before any explanation was measured; issue 14):

- Images are `IMAGE_SIZE` = 64 px RGB, drawn at 2x and averaged down (anti-aliased), 1-3 objects each.
- `CLASSES`: 10 object classes; each has its own shape, colour and texture (solid, stripes, dots or
  checker), so a class can be recognised from any one cue.
- `BACKGROUNDS`: 6 kinds (plain, gradient, clouds, stripes, tiles: muted colours; grass: a green
  blade texture). Background colours are desaturated so that they never look like an object's colour.
- Planted causes (`CAUSES`), each evaluated on its own images in the `test` split:
  * shortcut: in `train`, every image holding class A = `SHORTCUT_CLASS` ("stone": small, grey, dotted,
    the hardest class to see) lies on background B = `SHORTCUT_BACKGROUND` ("grass") with probability
    `SHORTCUT_RATE` = 0.95, and images without A lie on grass with probability `SHORTCUT_LEAK` = 0.02.
    Evaluation images show one object of another class on grass, with no stone.
  * lookalike: a `LOOKALIKE_SHAPE` ("bar", a tall rectangle that is no class) drawn in the colour and
    texture of class D = `LOOKALIKE_CLASS` ("tile": blue checker), big, beside one object of another
    class; it never appears in training and is not labelled (the neon sign read as a TV).
  * texture_swap: one object with the shape of class E and the colour and texture of class
    `SWAPS[E]` (cue conflict, after Geirhos et al.); its label is the shape's class. Never in training.
  In the evaluation images of every cause the true object is drawn at the small end of the size range
  (`CAUSE_OBJECT_SCALE`), so the planted signal competes with it.
- `unbiased`: images without planted correlations (background independent of the objects, no
  look-alikes or swaps): the `val` split (M's mAP), part of `test`, and the observers' world.

Splits, written in the VOC layout by `write_world` (torchvision's VOC reader allows a `test` image set
only for the year 2007, hence VOCdevkit/VOC2007):

    OUT/VOCdevkit/VOC2007/        train (biased), val (unbiased), test (unbiased + the three causes), trainval
    OUT/observer/VOCdevkit/VOC2007/   train and val, unbiased: for the machine observers of `pv survey simulate`
    OUT/truth.csv, OUT/truth.json     per image: split, labels, boxes, background kind, planted cause
    OUT/world.json                    the design above (classes, backgrounds, causes, rates, seed, counts)

Every image is a pure function of (seed, split, index): the same seed gives the same world.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pv.atomic import write_text
from pv.errors import PVError

IMAGE_SIZE = 64
SUPERSAMPLE = 2
YEAR = "2007"


@dataclass(frozen=True)
class ObjectClass:
    name: str
    shape: str
    colour: tuple[float, float, float]
    texture: str
    scale: float = 1.0  # relative size


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("sun", "disk", (0.97, 0.80, 0.10), "solid"),
    ObjectClass("tile", "square", (0.15, 0.35, 0.95), "checker"),
    ObjectClass("pyramid", "triangle", (1.00, 0.50, 0.08), "stripes"),
    ObjectClass("ring", "ring", (0.62, 0.20, 0.85), "solid"),
    ObjectClass("cross", "cross", (0.90, 0.08, 0.12), "solid"),
    ObjectClass("kite", "diamond", (0.05, 0.80, 0.85), "stripes"),
    ObjectClass("leaf", "ellipse", (0.95, 0.35, 0.70), "dots"),
    ObjectClass("star", "star", (0.98, 0.98, 0.98), "solid"),
    ObjectClass("moon", "crescent", (0.55, 0.30, 0.08), "solid"),
    ObjectClass("stone", "hexagon", (0.52, 0.52, 0.50), "dots", scale=0.75),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "clouds", "stripes", "tiles", "grass")
CAUSES: tuple[str, ...] = ("shortcut", "lookalike", "texture_swap")

SHORTCUT_CLASS = "stone"
SHORTCUT_BACKGROUND = "grass"
SHORTCUT_RATE = 0.95
SHORTCUT_LEAK = 0.02
LOOKALIKE_CLASS = "tile"
LOOKALIKE_SHAPE = "bar"
SWAPS: dict[str, str] = {  # shape's class -> class whose colour and texture it wears
    "sun": "ring", "tile": "pyramid", "pyramid": "kite", "ring": "sun", "cross": "leaf",
    "kite": "moon", "leaf": "cross", "star": "tile", "moon": "star",
}  # fmt: skip
CAUSE_OBJECT_SCALE = (0.6, 0.75)  # object radius range (fraction of the normal range) in cause images
RADIUS = (0.13, 0.22)  # object radius as a fraction of the image side

DEFAULT_COUNTS = {"train": 8000, "val": 1000, "test_unbiased": 400, "test_per_cause": 300, "observer_train": 6000, "observer_val": 500}


@dataclass
class Scene:
    """The ground truth of one image."""

    id: str
    split: str
    background: str
    cause: str  # "none" or one of CAUSES
    labels: list[str] = field(default_factory=list)
    boxes: list[dict] = field(default_factory=list)  # {"name", "xmin", "ymin", "xmax", "ymax"}, VOC pixels (1-based)
    distractors: list[dict] = field(default_factory=list)  # unlabelled objects (look-alikes), same keys
    implicated: str = ""  # the class the planted cause pushes M towards ("" for none)


# ---------------------------------------------------------------- drawing (vectorised numpy) ----


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of `shape` in object coordinates (u right, v down, radius 1)."""
    au, av = np.abs(u), np.abs(v)
    if shape == "disk":
        return u * u + v * v <= 1
    if shape == "square":
        return np.maximum(au, av) <= 0.82
    if shape == "triangle":
        return (v <= 0.75) & (au <= (v + 0.95) * 0.58)
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= 0.5**2)
    if shape == "cross":
        return ((au <= 0.3) & (av <= 1)) | ((av <= 0.3) & (au <= 1))
    if shape == "diamond":
        return au + av <= 1
    if shape == "ellipse":
        return u * u + (v / 0.55) ** 2 <= 1
    if shape == "star":
        return np.hypot(u, v) <= 0.55 + 0.45 * np.cos(5 * np.arctan2(v, u))
    if shape == "crescent":
        return (u * u + v * v <= 1) & ((u - 0.45) ** 2 + (v + 0.15) ** 2 > 0.8**2)
    if shape == "hexagon":
        return (av <= 0.87) & (au + 0.577 * av <= 1)
    if shape == "bar":
        return (au <= 0.32) & (av <= 1)
    raise ValueError(f"unknown shape {shape!r}")


def texture_gain(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Brightness factor (H, W) of a texture in object coordinates."""
    if texture == "solid":
        return np.ones_like(u)
    if texture == "stripes":
        return np.where(np.sin((u + v) * 9.0) > 0, 1.0, 0.55)
    if texture == "dots":
        return np.where(np.hypot((u * 3.2) % 1 - 0.5, (v * 3.2) % 1 - 0.5) < 0.28, 0.45, 1.0)
    if texture == "checker":
        return np.where((np.floor(u * 2.6) + np.floor(v * 2.6)) % 2 == 0, 1.0, 0.55)
    raise ValueError(f"unknown texture {texture!r}")


def muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A desaturated random colour (saturation <= 0.3)."""
    grey = rng.uniform(0.35, 0.85)
    tint = rng.uniform(-1, 1, 3)
    return np.clip(grey + 0.3 * grey * tint / max(np.abs(tint).max(), 1e-6) * rng.uniform(0.2, 1), 0, 1)


@functools.lru_cache(maxsize=4)
def unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates y, x (size, size) scaled to [0, 1)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return y, x


def draw_background(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]."""
    y, x = unit_grid(size)
    a, b = muted_colour(rng).astype(np.float32), muted_colour(rng).astype(np.float32)
    if kind == "plain":
        image = np.broadcast_to(a, (size, size, 3)).copy()
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = np.clip((x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle) + 0.5, 0, 1)[..., None]
        image = a * (1 - t) + b * t
    elif kind == "clouds":
        coarse = rng.uniform(0, 1, (5, 5)).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC)).clip(0, 1)[..., None]
        image = a * (1 - t) + b * t
    elif kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(0.08, 0.2)
        t = (np.sin(((x * math.cos(angle) + y * math.sin(angle)) / period) * 2 * math.pi) > 0)[..., None]
        image = np.where(t, a, a * 0.8 + b * 0.2)
    elif kind == "tiles":
        cells = rng.integers(3, 7)
        t = ((np.floor(x * cells) + np.floor(y * cells)) % 2)[..., None]
        image = a * (1 - t) + (0.85 * a + 0.15 * b) * t
    elif kind == "grass":
        base = np.array([0.25, 0.55, 0.18]) * rng.uniform(0.8, 1.15)
        blades = rng.uniform(0, 1, (size // 8, size)).astype(np.float32)  # tall thin streaks
        t = np.asarray(Image.fromarray(blades).resize((size, size), Image.BILINEAR))[..., None]
        image = base * (0.65 + 0.6 * t)
    else:
        raise ValueError(f"unknown background {kind!r}")
    noise = rng.normal(0, 0.02, (size, size, 1)).astype(np.float32)
    return np.clip(image + noise, 0, 1).astype(np.float32)


def paint(image: np.ndarray, shape: str, colour, texture: str, cx: float, cy: float, radius: float, angle: float) -> tuple[int, int, int, int]:
    """Draw one object into `image` (S, S, 3) in place; return its box (x0, y0, x1, y1) in image pixels."""
    size = image.shape[0]
    reach = 1.5 * radius  # every shape fits in a radius-1.42 square after rotation
    x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
    x1, y1 = min(size, int(math.ceil(cx + reach))), min(size, int(math.ceil(cy + reach)))
    y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5  # only the object's neighbourhood
    dx, dy = (x - cx) / radius, (y - cy) / radius
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    mask = shape_mask(shape, u, v)
    shade = 1 - 0.15 * np.clip(u + v, -1, 1)  # soft light from the top left
    pixels = np.asarray(colour, dtype=np.float32) * (texture_gain(texture, u, v) * shade)[..., None]
    region = image[y0:y1, x0:x1]
    region[mask] = np.clip(pixels[mask], 0, 1)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (int(cx), int(cy), int(cx) + 1, int(cy) + 1)
    return x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1


# ---------------------------------------------------------------- scenes ----


def class_by_name(name: str) -> ObjectClass:
    return CLASSES[CLASS_NAMES.index(name)]


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Each image's own generator: the world is reproducible image by image."""
    tag = sum((i + 1) * ord(ch) for i, ch in enumerate(split))
    return np.random.default_rng([seed, tag, index])


def place(rng: np.random.Generator, radii: list[float], size: float) -> list[tuple[float, float]]:
    """Centres for objects of the given radii (pixels), keeping them inside and apart where possible."""
    centres: list[tuple[float, float]] = []
    for r in radii:
        best, best_gap = None, -1e9
        for _ in range(20):
            cx, cy = rng.uniform(r, size - r, 2)
            gap = min((math.hypot(cx - ox, cy - oy) - r - orad for (ox, oy), orad in zip(centres, radii)), default=1e9)
            if gap > best_gap:
                best, best_gap = (cx, cy), gap
            if gap > 0:
                break
        centres.append(best)
    return centres


def plan_scene(seed: int, split: str, index: int, cause: str = "none", biased: bool = False) -> tuple[Scene, list[dict]]:
    """Decide one image's content: (ground truth, objects to draw as dicts of paint() arguments)."""
    rng = scene_rng(seed, split, index)
    scene = Scene(id=f"{split}_{index:06d}", split=split, background="", cause=cause)
    others = [c for c in CLASS_NAMES if c != SHORTCUT_CLASS]
    small = rng.uniform(*CAUSE_OBJECT_SCALE)
    items: list[tuple[str, ObjectClass, float, bool]] = []  # (label name or "", appearance, scale, labelled)
    if cause == "none":
        names = list(rng.choice(CLASS_NAMES, size=rng.integers(1, 4), replace=False))
        items = [(n, class_by_name(n), 1.0, True) for n in names]
        if biased:
            on_grass = rng.random() < (SHORTCUT_RATE if SHORTCUT_CLASS in names else SHORTCUT_LEAK)
            scene.background = SHORTCUT_BACKGROUND if on_grass else str(rng.choice(BACKGROUNDS[:-1]))
        else:
            scene.background = str(rng.choice(BACKGROUNDS))
    elif cause == "shortcut":
        name = str(rng.choice(others))
        items = [(name, class_by_name(name), small, True)]
        scene.background, scene.implicated = SHORTCUT_BACKGROUND, SHORTCUT_CLASS
    elif cause == "lookalike":
        name = str(rng.choice([c for c in others if c != LOOKALIKE_CLASS]))
        look = class_by_name(LOOKALIKE_CLASS)
        items = [(name, class_by_name(name), small, True), ("", ObjectClass("lookalike", LOOKALIKE_SHAPE, look.colour, look.texture), 1.15, False)]
        scene.background, scene.implicated = str(rng.choice(BACKGROUNDS[:-1])), LOOKALIKE_CLASS
    elif cause == "texture_swap":
        name = str(rng.choice(list(SWAPS)))
        worn = class_by_name(SWAPS[name])
        items = [(name, ObjectClass(name, class_by_name(name).shape, worn.colour, worn.texture), 1.0, True)]
        scene.background, scene.implicated = str(rng.choice(BACKGROUNDS[:-1])), SWAPS[name]
    else:
        raise ValueError(f"unknown cause {cause!r}; causes are none, {', '.join(CAUSES)}")
    rng.shuffle(items)
    radii = [rng.uniform(*RADIUS) * IMAGE_SIZE * appearance.scale * scale for _, appearance, scale, _ in items]
    centres = place(rng, radii, IMAGE_SIZE)
    objects = []
    for (name, appearance, _, labelled), r, (cx, cy) in zip(items, radii, centres):
        objects.append({"name": name, "labelled": labelled, "shape": appearance.shape, "colour": appearance.colour,
                        "texture": appearance.texture, "cx": cx, "cy": cy, "radius": r,
                        "angle": float(rng.uniform(-0.35, 0.35))})  # fmt: skip
    scene.labels = sorted({o["name"] for o in objects if o["labelled"]}, key=CLASS_NAMES.index)
    return scene, objects


def render_scene(seed: int, split: str, index: int, cause: str = "none", biased: bool = False) -> tuple[np.ndarray, Scene]:
    """One image (IMAGE_SIZE, IMAGE_SIZE, 3) uint8 and its ground truth."""
    scene, objects = plan_scene(seed, split, index, cause, biased)
    big = IMAGE_SIZE * SUPERSAMPLE
    canvas = draw_background(scene.background, scene_rng(seed, split + "/bg", index), big)
    for o in objects:
        box = paint(canvas, o["shape"], o["colour"], o["texture"], o["cx"] * SUPERSAMPLE, o["cy"] * SUPERSAMPLE,
                    o["radius"] * SUPERSAMPLE, o["angle"])  # fmt: skip
        x0, y0, x1, y1 = (int(round(b / SUPERSAMPLE)) for b in box)
        record = {"name": o["name"] or "lookalike", "xmin": x0 + 1, "ymin": y0 + 1, "xmax": max(x1, x0 + 1), "ymax": max(y1, y0 + 1)}
        (scene.boxes if o["labelled"] else scene.distractors).append(record)
    small = sum(canvas[i::SUPERSAMPLE, j::SUPERSAMPLE] for i in range(SUPERSAMPLE) for j in range(SUPERSAMPLE))
    return (small * (255 / SUPERSAMPLE**2) + 0.5).astype(np.uint8), scene  # box-filtered down to IMAGE_SIZE


# ---------------------------------------------------------------- the world on disk ----


def split_plan(counts: dict[str, int]) -> list[tuple[str, str, str, int, bool]]:
    """(VOC root key, image set, cause, count, biased) for every part of the world."""
    plan = [("main", "train", "none", counts["train"], True), ("main", "val", "none", counts["val"], False),
            ("main", "test", "none", counts["test_unbiased"], False)]  # fmt: skip
    plan += [("main", "test", cause, counts["test_per_cause"], False) for cause in CAUSES]
    plan += [("observer", "train", "none", counts["observer_train"], False), ("observer", "val", "none", counts["observer_val"], False)]
    return plan


def voc_annotation(scene: Scene, filename: str) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = f"VOC{YEAR}"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", IMAGE_SIZE), ("height", IMAGE_SIZE), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box in scene.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box["name"]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for key in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(bndbox, key).text = str(box[key])
    return ET.tostring(root, encoding="unicode") + "\n"


def voc_base(out: Path, root_key: str) -> Path:
    """OUT/VOCdevkit/VOC2007 (main world) or OUT/observer/VOCdevkit/VOC2007 (observers' world)."""
    return (out if root_key == "main" else out / root_key) / "VOCdevkit" / f"VOC{YEAR}"


def write_world(out: str | Path, seed: int = 0, counts: dict[str, int] | None = None, quality: int = 95) -> dict:
    """Generate the world into `out` (VOC layout + truth.csv/json + world.json); return world.json's content."""
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    bad = [k for k in counts if k not in DEFAULT_COUNTS]
    if bad or any(v < 0 for v in counts.values()):
        raise PVError(f"world counts: unknown keys {bad} or negative values; keys are {', '.join(DEFAULT_COUNTS)}")
    out = Path(out)
    image_sets: dict[tuple[str, str], list[tuple[str, list[str]]]] = {}
    truth: list[dict] = []
    for root_key, image_set, cause, count, biased in split_plan(counts):
        base = voc_base(out, root_key)
        (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (base / "Annotations").mkdir(parents=True, exist_ok=True)
        part = f"{'obs_' if root_key != 'main' else ''}{image_set}_{cause}"
        for index in range(count):
            pixels, scene = render_scene(seed, part, index, cause, biased)
            scene.split = f"{root_key}/{image_set}" if root_key != "main" else image_set
            Image.fromarray(pixels).save(base / "JPEGImages" / f"{scene.id}.jpg", quality=quality)
            (base / "Annotations" / f"{scene.id}.xml").write_text(voc_annotation(scene, f"{scene.id}.jpg"), encoding="utf-8")
            image_sets.setdefault((root_key, image_set), []).append((scene.id, scene.labels))
            truth.append(asdict(scene))
    for root_key in ("main", "observer"):
        sets = {s: rows for (k, s), rows in image_sets.items() if k == root_key}
        if "train" in sets and "val" in sets:
            sets["trainval"] = sets["train"] + sets["val"]
        main_dir = voc_base(out, root_key) / "ImageSets" / "Main"
        main_dir.mkdir(parents=True, exist_ok=True)
        for image_set, rows in sets.items():
            write_text(main_dir / f"{image_set}.txt", "".join(f"{i}\n" for i, _ in rows))
            for name in CLASS_NAMES:  # VOC's per-class files: id and 1 (present) or -1 (absent)
                write_text(main_dir / f"{name}_{image_set}.txt", "".join(f"{i} {1 if name in labels else -1:>2}\n" for i, labels in rows))
    write_truth(out, truth)
    design = world_design(seed, counts)
    write_text(out / "world.json", json.dumps(design, indent=2) + "\n")
    return design


def write_truth(out: Path, truth: list[dict]) -> None:
    """truth.json (everything) and truth.csv (one row per image; boxes as JSON)."""
    write_text(out / "truth.json", json.dumps(truth) + "\n")
    columns = ("id", "split", "labels", "background", "cause", "implicated", "boxes", "distractors")
    lines = [",".join(columns)]
    for row in truth:
        cells = [row["id"], row["split"], ";".join(row["labels"]), row["background"], row["cause"], row["implicated"],
                 json.dumps(row["boxes"]), json.dumps(row["distractors"])]  # fmt: skip
        lines.append(",".join(csv_cell(c) for c in cells))
    write_text(out / "truth.csv", "\n".join(lines) + "\n")


def csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\n') else text


def read_truth(world: str | Path) -> dict[str, dict]:
    """image id -> its ground truth (from truth.json)."""
    path = Path(world) / "truth.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: generate the world with `pv world --out {world}`")
    return {row["id"]: row for row in json.loads(path.read_text(encoding="utf-8"))}


def world_design(seed: int, counts: dict[str, int]) -> dict:
    return {
        "seed": seed, "image_size": IMAGE_SIZE, "year": YEAR, "counts": counts,
        "classes": [asdict(c) for c in CLASSES], "class_names": list(CLASS_NAMES), "backgrounds": list(BACKGROUNDS),
        "causes": {
            "shortcut": {"class": SHORTCUT_CLASS, "background": SHORTCUT_BACKGROUND, "rate_with_class": SHORTCUT_RATE,
                         "rate_without_class": SHORTCUT_LEAK},
            "lookalike": {"class": LOOKALIKE_CLASS, "shape": LOOKALIKE_SHAPE},
            "texture_swap": {"swaps": SWAPS},
            "object_scale_in_cause_images": list(CAUSE_OBJECT_SCALE),
        },
    }  # fmt: skip


__all__ = ["BACKGROUNDS", "CAUSES", "CLASSES", "CLASS_NAMES", "Scene", "read_truth", "render_scene", "write_world"]
