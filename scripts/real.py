"""The real-model study of issue 19: PV and the baselines on the packaged ImageNet EfficientNet-Lite0.

    python scripts/real.py [--preset demo|full|tiny] [--seed 0] [--out runs/real] [--root ../shared/data/imagenet_samples]

M = tf_efficientnet_lite0 (packaged ImageNet weights); observers = Lite1 and Lite2 (never M). Photos: the
folder `--root` (file i is class i, as in ../shared/data/imagenet_samples) with the fixed split of
configs/data/imagenet_samples.yaml (every 10th file held out). Steps, each printed before it runs; the
public `pv` commands are run as a user would type them, the script's own measurements are named
`(script) ...`:

1. (script) classify the photos with M: top-1 / top-5 of every photo, M's wrong predictions;
2. pv fit: the decoder (configs/decoder/real_lite0.yaml, or real_lite0_full.yaml for --preset full);
3. (script) the decoder on held-out photos (SSIM, PSNR, top-1 agreement M(y) = M(x), M's top class of x
   among its top 5 on y) and the references (training-set mean image, matched Gaussian blur, the photo
   at the decoder's output size);
4. (script) the gallery of M's wrong predictions: photo | Grad-CAM | reconstruction | PV for M's class |
   PV for the true class (class-discriminative PV);
5. (script) machine observers (Lite1, Lite2) on M's right and wrong predictions, four arms;
6. pv explain (M's wrong predictions: Grad-CAM, PV, class-discriminative PV), pv evaluate-explanations
   (deletion / insertion AUC), pv sanity-check (cascading randomisation);
7. OUT/report.html and OUT/summary.json.

Resumable: a finished step is recorded in OUT/steps.json and skipped when the script runs again with the
same --out (a killed `pv fit` resumes from its last checkpoint). Torch runs one thread per process.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PV = [sys.executable, "-m", "pv.cli"]
ARCH, OBSERVERS = "tf_efficientnet_lite0", ("tf_efficientnet_lite1", "tf_efficientnet_lite2")
ARMS = ("photo", "gradcam", "reconstruction", "pv")
# Sizes per preset. demo: the 45-minute budget on 2 CPU cores; full: the longer resumable recipe; tiny: the test.
PRESETS: dict[str, dict] = {
    "tiny": {"config": "configs/decoder/real_lite0.yaml", "fit": ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
             "--trainer.limit_val_batches", "1", "--data.init_args.views", "1"], "observe": (3, 3), "gallery": 2, "evaluate": 1, "sanity": 1, "steps": 3},
    "demo": {"config": "configs/decoder/real_lite0.yaml", "fit": [], "observe": (30, 30), "gallery": 12, "evaluate": 4, "sanity": 2, "steps": 10},
    "full": {"config": "configs/decoder/real_lite0_full.yaml", "fit": [], "observe": (None, None), "gallery": 40, "evaluate": 32, "sanity": 16, "steps": 20},
}  # fmt: skip


# ------------------------------------------------------------------ steps ----


class Steps:
    """Runs each step once: finished steps (OUT/steps.json) are skipped when the script runs again."""

    def __init__(self, out: Path):
        self.path = out / "steps.json"
        self.done: list[dict] = json.loads(self.path.read_text()) if self.path.is_file() else []

    def finished(self, title: str) -> bool:
        return any(s["step"] == title for s in self.done)

    def record(self, title: str, command: str, seconds: float) -> None:
        from pv.atomic import write_text

        self.done.append({"step": title, "command": command, "seconds": round(seconds, 1)})
        write_text(self.path, json.dumps(self.done, indent=2) + "\n")

    def command(self, title: str, args: list[str], resume: list[str] | None = None) -> None:
        """Run one public `pv` command (printed first); `resume`: the command that continues a killed run."""
        if self.finished(title):
            print(f"\n=== {title}: done earlier (skipped)", flush=True)
            return
        args = resume or args
        line = "pv " + " ".join(shlex.quote(a) for a in args)
        print(f"\n=== {title}\n$ {line}", flush=True)
        start = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "WANDB_MODE": "offline"}
        code = subprocess.run([*PV, *args], cwd=ROOT, env=env).returncode
        if code != 0:
            raise SystemExit(f"real: step '{title}' failed (exit {code}): {line}")
        self.record(title, line, time.perf_counter() - start)
        print(f"--- {title}: {time.perf_counter() - start:.0f} s", flush=True)

    def script(self, title: str, what: str, function, *args) -> None:
        """Run one of the script's own measurements (printed first), unless done earlier."""
        if self.finished(title):
            print(f"\n=== {title}: done earlier (skipped)", flush=True)
            return
        print(f"\n=== {title}\n(script) {what}", flush=True)
        start = time.perf_counter()
        function(*args)
        self.record(title, f"(script) {what}", time.perf_counter() - start)
        print(f"--- {title}: {time.perf_counter() - start:.0f} s", flush=True)


def write_json(path: Path, data) -> None:
    from pv.atomic import write_text

    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ photos and models ----


def photo_module(root: str):
    from pv.data.photos import PhotoFolderDataModule

    return PhotoFolderDataModule(root=root, holdout_every=10, labels="order")


def load_photos(dataset, indices: list[int] | None = None):
    """(images (N, 3, 224, 224) in [0, 1], labels (N,), paths) of `dataset` (evaluation view)."""
    import torch

    indices = range(len(dataset)) if indices is None else indices
    items = [dataset[i] for i in indices]
    return torch.stack([s["image"] for s in items]), torch.stack([torch.as_tensor(s["label"]) for s in items]), [s["path"] for s in items]


def all_photos(root: str):
    """Every photo, sorted by path, in the evaluation view, with a held-out flag (the decoder never trained on it)."""
    from pv.data.datasets import ImageFileDataset

    module = photo_module(root)
    paths, labels = module.files()
    return ImageFileDataset(paths, module.eval_transform, labels, source=root), [i % module.holdout_every == 0 for i in range(len(paths))]


def batched(function, images, batch: int = 25):
    import torch

    with torch.no_grad():
        return torch.cat([function(images[i : i + batch]) for i in range(0, len(images), batch)])


def classifier(arch: str = ARCH):
    from pv.models import load_classifier

    return load_classifier(arch=arch, weights="packaged").eval()


def visualizer(decoder_path: Path):
    from pv.explain import PerceptionVisualizer
    from pv.models import load_decoder

    decoder, encoder_config = load_decoder(decoder_path)
    return PerceptionVisualizer(classifier(), decoder.eval(), encoder_config)


# ------------------------------------------------------------------ 1. classify ----


def classify(root: str, out: Path) -> None:
    """OUT/classify.json: per photo its label, M's top 5 and probability; top-1 over all photos."""
    import torch

    dataset, held = all_photos(root)
    model = classifier()
    rows, correct = [], 0
    for start in range(0, len(dataset), 50):
        images, labels, paths = load_photos(dataset, list(range(start, min(start + 50, len(dataset)))))
        with torch.no_grad():
            probs = model(images).softmax(1)
        top = probs.topk(5, dim=1)
        for k, path in enumerate(paths):
            index = start + k
            rows.append({"index": index, "path": path, "label": int(labels[k]), "top5": top.indices[k].tolist(), "prob": round(float(top.values[k, 0]), 4),
                         "right": int(top.indices[k, 0]) == int(labels[k]), "held_out": held[index]})  # fmt: skip
            correct += rows[-1]["right"]
        print(f"  {len(rows)}/{len(dataset)} photos, top-1 so far {correct / len(rows):.3f}", flush=True)
    write_json(out / "classify.json", {"top1": correct / len(rows), "class_names": list(model.class_names), "photos": rows})


# ------------------------------------------------------------------ 3. decoder metrics ----


def image_scores(model, images, reference_top):
    """SSIM / PSNR need the photo; here: M's top-1 agreement and top-5 hit against `reference_top` (N,)."""
    logits = batched(model, images)
    return (logits.argmax(1) == reference_top).float(), (logits.topk(5, 1).indices == reference_top[:, None]).any(1).float()


def fidelity(images, photos):
    import torch
    from pytorch_msssim import ssim

    s = ssim(images, photos, data_range=1.0, size_average=False)  # (N,)
    psnr = 10 * torch.log10(1 / ((images - photos) ** 2).mean((1, 2, 3)).clamp(min=1e-10))
    return s, psnr


def gaussian_blur(images, sigma: float):
    """Separable Gaussian blur (B, 3, H, W), kernel radius 3 sigma (at most H - 1), reflected borders."""
    import torch
    import torch.nn.functional as F

    radius = min(int(round(3 * sigma)), images.shape[-1] - 1, images.shape[-2] - 1)
    if sigma <= 0 or radius < 1:
        return images
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(3, 1, 1, 1)  # (3, 1, 1, k)
    padded = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    rows = F.conv2d(padded, kernel, groups=3)  # blur along W
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode="reflect"), kernel.transpose(2, 3), groups=3)  # along H


def decoder_metrics(root: str, decoder_path: Path, out: Path) -> None:
    """OUT/decoder.json: the decoder and the three references on the held-out photos."""
    import torch
    import torch.nn.functional as F

    module = photo_module(root)
    photos, _, _ = load_photos(module.split("val"))
    pv = visualizer(decoder_path)
    model = pv.classifier
    top = batched(model, photos).argmax(1)
    reconstruction = batched(pv.reconstruct, photos)
    out_size = pv.decoder(pv.latent(photos[:1])).shape[-1]
    result: dict = {"images": len(photos), "decoder_output_px": out_size}

    def scored(images) -> dict:
        s, p = fidelity(images, photos)
        a1, a5 = image_scores(model, images, top)
        return {"ssim": s.mean().item(), "psnr": p.mean().item(), "agreement_top1": a1.mean().item(), "agreement_top5": a5.mean().item()}

    result["decoder"] = scored(reconstruction)
    small = F.interpolate(F.interpolate(photos, size=out_size, mode="area"), size=photos.shape[-2:], mode="bilinear", align_corners=False)
    result["output_size"] = {**scored(small.clamp(0, 1)), "size": out_size}
    train_photos = module.split("train", module.eval_transform)
    mean = sum(train_photos[i]["image"] for i in range(len(train_photos))) / len(train_photos)  # (3, 224, 224)
    result["mean_image"] = scored(mean.expand_as(photos).contiguous())
    target = result["decoder"]["ssim"]  # blur until the mean SSIM to the photo equals the reconstructions'
    low, high = 0.0, 100.0  # the blur's radius stops at the image size: the top is a near-uniform colour
    for _ in range(10):  # sigma to 0.1 px
        sigma = (low + high) / 2
        low, high = (sigma, high) if fidelity(gaussian_blur(photos, sigma), photos)[0].mean().item() > target else (low, sigma)
    sigma = (low + high) / 2
    result["matched_blur"] = {**scored(gaussian_blur(photos, sigma)), "sigma": sigma}
    result["matched_blur"]["matched"] = abs(result["matched_blur"]["ssim"] - target) < 0.01  # False: even the strongest blur keeps more SSIM
    write_json(out / "decoder.json", result)
    print("  " + "; ".join(f"{k}: SSIM {v['ssim']:.3f}, agreement {v['agreement_top1']:.2f}" for k, v in result.items() if isinstance(v, dict)), flush=True)


# ------------------------------------------------------------------ 4. gallery ----


def gallery(root: str, decoder_path: Path, out: Path, count: int) -> None:
    """OUT/gallery/*.png and gallery.json: photo | Grad-CAM | reconstruction | PV (M's class) | PV (true class)."""
    import torch

    from pv.explain.figures import save_png
    from pv.explain.overlay import heatmap_overlay

    info = read_json(out / "classify.json")
    wrong = [r for r in info["photos"] if not r["right"]][:count]
    dataset, _ = all_photos(root)
    images, labels, _ = load_photos(dataset, [r["index"] for r in wrong])
    pv = visualizer(decoder_path)
    names = info["class_names"]
    targets = torch.tensor([[r["top5"][0], r["label"]] for r in wrong])  # (B, 2): M's class, the true class
    entries = []
    for start in range(0, len(wrong), 4):
        part = slice(start, start + 4)
        result = pv(images[part], targets[part], class_discriminative=True)
        for k, row in enumerate(wrong[part]):
            stem = Path(row["path"]).name
            panels = {"photo": images[part][k], "gradcam": heatmap_overlay(images[part][k : k + 1], result["saliency"][k, 0:1])[0],
                      "reconstruction": result["reconstruction"][k], "pv_m": result["class_pv"][k, 0], "pv_true": result["class_pv"][k, 1]}  # fmt: skip
            files = {key: save_png(image, out / "gallery" / f"{stem}.{key}.png").relative_to(out).as_posix() for key, image in panels.items()}
            entries.append({"path": row["path"], "true": names[row["label"]], "predicted": names[row["top5"][0]], "prob": row["prob"],
                            "held_out": row["held_out"], "files": files})  # fmt: skip
    write_json(out / "gallery.json", entries)


# ------------------------------------------------------------------ 5. observers ----


def observe(root: str, decoder_path: Path, out: Path, counts: tuple, seed: int) -> None:
    """OUT/observers.json: per image, arm and observer: top-1 == M's class (all 1,000) and the pick among the options."""
    import torch
    import torch.nn.functional as F

    from pv.explain import perception_visualization
    from pv.survey.questions import Prediction, class_options

    info = read_json(out / "classify.json")
    rng = random.Random(seed)
    picked = []
    for subset, right, count in (("right", True, counts[0]), ("wrong", False, counts[1])):
        pool = [r for r in info["photos"] if r["right"] == right]
        picked += [(subset, r) for r in sorted(rng.sample(pool, min(count, len(pool))) if count else pool, key=lambda r: r["index"])]
    dataset, _ = all_photos(root)
    pv = visualizer(decoder_path)
    observers = {arch: classifier(arch) for arch in OBSERVERS}
    classes = [str(i) for i in range(len(info["class_names"]))]
    rows = []
    for start in range(0, len(picked), 10):
        chunk = picked[start : start + 10]
        images, labels, _ = load_photos(dataset, [r["index"] for _, r in chunk])
        tops = torch.tensor([r["top5"][0] for _, r in chunk])
        result = pv(images, tops[:, None])
        maps = result["saliency"][:, 0]  # (B, 1, H, W): Grad-CAM of M's class, as PV uses it
        arms = {"photo": images, "gradcam": perception_visualization(images, maps), "reconstruction": result["reconstruction"], "pv": result["pv"][:, 0]}
        logits = {}
        for arch, observer in observers.items():
            size = observer.input_size
            for arm, panel in arms.items():
                with torch.no_grad():
                    logits[arch, arm] = observer(F.interpolate(panel.float(), size=size, mode="bilinear", align_corners=False).clamp(0, 1))
        for k, (subset, row) in enumerate(chunk):
            prediction = Prediction(id=str(row["index"]), path=row["path"], labels=(str(row["label"]),), predicted=(str(row["top5"][0]),),
                                    top_class=str(row["top5"][0]), top_prob=row["prob"], bucket="correct" if row["right"] else "incorrect")  # fmt: skip
            options = [int(c) for c in class_options(prediction, classes, random.Random(f"options-{seed}-{row['index']}"))]
            for (arch, arm), value in logits.items():
                choice = options[int(value[k, options].argmax())]
                rows.append({"index": row["index"], "subset": subset, "held_out": row["held_out"], "observer": arch, "arm": arm,
                             "top1": int(value[k].argmax()) == row["top5"][0], "options": choice == row["top5"][0]})  # fmt: skip
        print(f"  {min(start + 10, len(picked))}/{len(picked)} images", flush=True)
    write_json(out / "observers.json", {"seed": seed, "observers": list(OBSERVERS), "rows": rows})


def bootstrap(values: list[float], seed: int, rounds: int = 2000) -> list[float] | None:
    """95% percentile-bootstrap CI of the mean of per-image scores."""
    import numpy as np

    if not values:
        return None
    data = np.asarray(values, dtype=float)
    means = np.random.default_rng(seed).choice(data, size=(rounds, len(data))).mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def observer_summary(out: Path, seed: int) -> dict:
    """observers.<arm>.{right, wrong} (mean over both observers of top-1 == M's class) and observers.detail."""
    from scipy.stats import mannwhitneyu

    rows = read_json(out / "observers.json")["rows"]
    summary: dict = {arm: {} for arm in ARMS}
    detail: dict = {"n_images": {}, "arms": {arm: {} for arm in ARMS}, "tests": {}, "held_out_only": {arm: {} for arm in ARMS}}
    scores: dict = {}
    for subset in ("right", "wrong"):
        ids = sorted({r["index"] for r in rows if r["subset"] == subset})
        detail["n_images"][subset] = len(ids)
        for arm in ARMS:
            mine = [r for r in rows if r["subset"] == subset and r["arm"] == arm]
            entry: dict = {}
            for metric in ("top1", "options"):
                per_image = {i: [] for i in ids}
                for r in mine:
                    per_image[r["index"]].append(float(r[metric]))
                values = [sum(v) / len(v) for v in per_image.values() if v]
                scores[subset, arm, metric] = values
                entry[metric] = {"mean": sum(values) / len(values) if values else None, "ci95": bootstrap(values, seed),
                                 "per_observer": {o: (lambda x: sum(x) / len(x) if x else None)([float(r[metric]) for r in mine if r["observer"] == o]) for o in OBSERVERS}}  # fmt: skip
                held = [float(r[metric]) for r in mine if r["held_out"]]
                detail["held_out_only"][arm].setdefault(subset, {})[metric] = {"mean": sum(held) / len(held) if held else None, "n_answers": len(held)}
            summary[arm][subset] = entry["top1"]["mean"]
            detail["arms"][arm][subset] = entry
    # The paper's one-sided hypotheses, Grad-CAM first: observers get M's class less often from Grad-CAM than from PV
    # on M's wrong predictions, and more often on its right ones (Mann-Whitney U over per-image scores).
    for subset, alternative in (("wrong", "less"), ("right", "greater")):
        for metric in ("options", "top1"):
            a, b = scores[subset, "gradcam", metric], scores[subset, "pv", metric]
            if a and b and len(set(a + b)) > 1:
                test = mannwhitneyu(a, b, alternative=alternative)
                detail["tests"][f"{subset}/{metric}"] = {"alternative": f"gradcam {alternative} than pv", "u": float(test.statistic), "p": float(test.pvalue)}
            else:
                detail["tests"][f"{subset}/{metric}"] = {"alternative": f"gradcam {alternative} than pv", "u": None, "p": None}
    summary["detail"] = detail
    return summary


# ------------------------------------------------------------------ report ----


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def write_report(out: Path, summary: dict, steps: list[dict], preset: str) -> Path:
    from pv.atomic import write_text

    e = html.escape
    d, ref, obs = summary["decoder"], summary["references"], summary["observers"]
    detail = obs["detail"]
    parts = ["<!doctype html><meta charset='utf-8'><title>pv real: EfficientNet-Lite0 on real photos</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
             "img.p{width:160px}figure{display:inline-block;margin:.2em}figcaption{font-size:80%}</style>",
             f"<h1>pv real ({e(preset)} preset): PV on the packaged ImageNet EfficientNet-Lite0</h1>",
             "<h2>Design (fixed before the numbers)</h2><ul>"
             "<li>M = tf_efficientnet_lite0 with the packaged ImageNet weights; the photos are one per ImageNet class (file i = class i); "
             "every 10th file is held out from the decoder's training (never trained on).</li>"
             "<li>The decoder inverts M's last conv stage (1280 x 7 x 7) with the paper's loss (MSE, SSIM, DSIM); its config and size are in the steps below.</li>"
             "<li>Decoder numbers are on the held-out photos. References: the training-set mean image (the floor); the photo Gaussian-blurred "
             "until its mean SSIM to the photo equals the reconstructions' (a decoder that is only a blur does no better); the photo at the "
             "decoder's output size, upsampled (the ceiling for that size).</li>"
             "<li>Observers: the packaged Lite1 and Lite2 (never M). Arms: the photo; Grad-CAM of M's class as a mask on the photo (white where the "
             "map is 0, as PV masks the reconstruction); the reconstruction; PV. Each observer sees the 224 px panel resized to its input size. "
             "Scored separately on M's right and wrong predictions: how often the observer's top class over all 1,000 classes is M's class, and how "
             "often, among the 4 class options of the study (M's class, the true label, random fillers; `pv.survey.questions.class_options`; "
             "'can't tell' is never chosen), its most probable option is M's class. 95% CIs: percentile bootstrap over images. Tests: the paper's "
             "one-sided Mann-Whitney U on per-image scores, Grad-CAM first: less than PV on wrong, greater on right predictions.</li>"
             "<li>Most observer images are decoder training photos (90% of the photos are); held-out-only numbers are in summary.json (observers.detail.held_out_only).</li></ul>",
             f"<h2>Classifier M</h2><p>top-1 on {summary['classifier']['photos']} photos: <b>{pct(summary['classifier']['top1'])}</b>; "
             f"wrong predictions: {summary['classifier']['wrong']}.</p>",
             f"<h2>Decoder (held-out photos, n = {summary['decoder']['images']})</h2><table><tr><th></th><th>SSIM</th><th>PSNR (dB)</th>"
             "<th>top-1 agreement M(y) = M(x)</th><th>M(x) among top 5 of M(y)</th></tr>"]  # fmt: skip
    blur = "matched blur (sigma %.1f px%s)" % (ref["matched_blur"]["sigma"], "" if ref["matched_blur"].get("matched", True) else "; the strongest blur, still above the reconstructions' SSIM")
    rows = [("reconstruction", d), (blur, ref["matched_blur"]),
            (f"photo at {ref['output_size']['size']} px (ceiling)", ref["output_size"]), ("training-set mean image (floor)", ref["mean_image"])]
    for name, r in rows:
        parts.append(f"<tr><td>{e(name)}</td><td>{r['ssim']:.3f}</td><td>{r['psnr']:.2f}</td><td>{pct(r['agreement_top1'])}</td><td>{pct(r['agreement_top5'])}</td></tr>")
    targets = summary["targets"]
    parts.append("</table><p>Targets of issue 19: " + "; ".join(f"{e(k)}: {'met' if v else '<b>missed</b>'}" for k, v in targets.items()) + ".</p>")
    parts.append("<h2>Machine observers: observer's top class = M's class</h2><table><tr><th>arm</th><th>right (all 1,000)</th><th>wrong (all 1,000)</th>"
                 "<th>right (among options)</th><th>wrong (among options)</th>" + "".join(f"<th>{e(o)} right / wrong (all 1,000)</th>" for o in OBSERVERS) + "</tr>")
    for arm in ARMS:
        cells = []
        for metric in ("top1", "options"):
            for subset in ("right", "wrong"):
                entry = detail["arms"][arm][subset][metric]
                ci = entry["ci95"]
                cells.append(f"{pct(entry['mean'])}" + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else ""))
        per = [" / ".join(pct(detail["arms"][arm][s]["top1"]["per_observer"][o]) for s in ("right", "wrong")) for o in OBSERVERS]
        parts.append(f"<tr><td>{e(arm)}</td>" + "".join(f"<td>{c}</td>" for c in cells + per) + "</tr>")
    parts.append(f"</table><p>Images: {detail['n_images']['right']} right, {detail['n_images']['wrong']} wrong predictions. Tests:</p><ul>")
    for key, t in detail["tests"].items():
        parts.append(f"<li>{e(key)}: {e(t['alternative'])}: " + ("n/a" if t["p"] is None else f"U = {t['u']:.1f}, p = {t['p']:.4g}") + "</li>")
    parts.append("</ul><h2>M's wrong predictions: photo | Grad-CAM | reconstruction | PV for M's class | PV for the true class</h2>")
    for g in read_json(out / "gallery.json"):
        figures = "".join(f"<figure><img class='p' src='{e(g['files'][k])}' alt='{k}'><figcaption>{label}</figcaption></figure>"
                          for k, label in (("photo", "photo"), ("gradcam", "Grad-CAM"), ("reconstruction", "reconstruction"),
                                           ("pv_m", f"PV: {e(g['predicted'])}"), ("pv_true", f"PV: {e(g['true'])}")))  # fmt: skip
        parts.append(f"<div><p><b>{e(Path(g['path']).name)}</b>: true <b>{e(g['true'])}</b>, M says <b>{e(g['predicted'])}</b> ({g['prob']:.2f})"
                     f"{' (held out)' if g['held_out'] else ' (a decoder training photo)'}</p>{figures}</div>")  # fmt: skip
    parts.append("<h2>Explanations on the real weights</h2><ul><li><a href='explain/index.html'>pv explain gallery</a> (M's wrong predictions)</li>"
                 "<li><a href='evaluate/'>deletion / insertion (pv evaluate-explanations)</a></li><li><a href='sanity/'>cascading randomisation (pv sanity-check)</a></li></ul>")
    parts.append("<table><tr><th>method</th><th>deletion AUC (lower is better)</th><th>insertion AUC (higher is better)</th><th>images</th></tr>")
    for method, r in summary["saliency"]["deletion_insertion"].items():
        parts.append(f"<tr><td>{e(method)}</td><td>{r['deletion_auc']:.3f}</td><td>{r['insertion_auc']:.3f}</td><td>{r['images']}</td></tr>")
    sanity = summary["saliency"]["sanity"]
    parts.append("</table><p>Cascading randomisation (SSIM to the original map after re-initialising M's layers from the top down; "
                 "pv sanity-check covers PV and Grad-CAM): PV " + ", ".join(f"{v:.2f}" for v in sanity["pv_ssim"]) + "; Grad-CAM "
                 + ", ".join(f"{v:.2f}" for v in sanity["gradcam_ssim"]) + f" (layers: {e(', '.join(map(str, sanity['steps'])))}).</p>"
                 "<img src='sanity/sanity.png' alt='sanity check curves' style='max-width:60em'>")  # fmt: skip
    parts.append("<h2>Steps</h2><table><tr><th>step</th><th>command</th><th>seconds</th></tr>")
    parts += [f"<tr><td>{e(s['step'])}</td><td><code>{e(s['command'])}</code></td><td>{s['seconds']}</td></tr>" for s in steps]
    parts.append("</table>")
    return write_text(out / "report.html", "\n".join(parts) + "\n")


def read_saliency(out: Path) -> dict:
    """Deletion / insertion AUC per method (pv evaluate-explanations) and the cascading-randomisation SSIMs (pv sanity-check)."""
    import csv

    with (out / "evaluate" / "saliency_metrics.csv").open(newline="", encoding="utf-8") as handle:
        auc = {r["method"]: {"deletion_auc": float(r["deletion_auc"]), "insertion_auc": float(r["insertion_auc"]), "images": int(r["images"])}
               for r in csv.DictReader(handle)}  # fmt: skip
    return {"deletion_insertion": auc, "sanity": read_json(out / "sanity" / "sanity.json")}


# ------------------------------------------------------------------ main ----


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="demo", help="demo (<= 45 min on 2 cores), full (the longer decoder), tiny (smoke test)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the observer images, options and bootstrap")
    parser.add_argument("--out", default="runs/real", help="output folder (running again with the same folder resumes)")
    parser.add_argument("--root", default="../shared/data/imagenet_samples", help="photo folder: file i (sorted) is ImageNet class i")
    parser.add_argument("--decoder-epochs", type=int, default=None, help="override the preset's decoder epochs (--trainer.max_epochs)")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = str(Path(args.root))
    settings = {"preset": args.preset, "seed": args.seed, "root": root, "decoder_epochs": args.decoder_epochs}
    if (out / "run.json").is_file() and read_json(out / "run.json") != settings:  # never mix two runs' steps
        raise SystemExit(f"real: {out} holds a run with {read_json(out / 'run.json')}; use another --out (OUT=...) for {settings}")
    write_json(out / "run.json", settings)
    steps = Steps(out)
    total = time.perf_counter()
    if not Path(root).is_dir():
        raise SystemExit(f"real: no photo folder {root} (--root): the shared ImageNet photos, or a folder whose file i is class i")
    decoder_dir = out / "decoder"
    decoder = decoder_dir / "checkpoints" / "last.ckpt"

    steps.script("classify the photos with M", f"M = {ARCH} (packaged weights) on every photo of {root}", classify, root, out)
    fit = ["fit", "--config", preset["config"], "--data.init_args.source.init_args.root", root, "--trainer.default_root_dir", str(decoder_dir),
           "--trainer.enable_progress_bar", "false", *preset["fit"]]  # fmt: skip
    if args.decoder_epochs is not None:
        fit += ["--trainer.max_epochs", str(args.decoder_epochs)]
    resume = ["fit", "--config", str(decoder_dir / "config.yaml"), "--ckpt_path", "last"] if decoder.is_file() else None
    steps.command("fit the decoder", fit, resume)
    steps.script("decoder metrics", "SSIM, PSNR, agreement of M on held-out photos and the three references", decoder_metrics, root, decoder, out)
    steps.script("gallery of M's wrong predictions", "photo | Grad-CAM | reconstruction | PV for M's class | PV for the true class",
                 gallery, root, decoder, out, preset["gallery"])  # fmt: skip
    steps.script("machine observers", f"{' and '.join(OBSERVERS)} on M's right and wrong predictions, arms {', '.join(ARMS)}",
                 observe, root, decoder, out, preset["observe"], args.seed)  # fmt: skip
    info = read_json(out / "classify.json")
    wrong_dir, held_dir = out / "photos" / "wrong", out / "photos" / "held_out"
    for folder, rows in ((wrong_dir, [r for r in info["photos"] if not r["right"]][: preset["gallery"]]),
                         (held_dir, [r for r in info["photos"] if r["held_out"]][: preset["evaluate"]])):  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        for r in rows:
            link = folder / Path(r["path"]).name
            if not link.exists():
                link.symlink_to(Path(r["path"]).resolve())
    model = ["--arch", ARCH, "--weights", "packaged"]
    steps.command("explain M's wrong predictions", ["explain", *model, "--decoder", str(decoder), "--images", str(wrong_dir),
                                                    "--methods", "gradcam,pv,cpv", "--out", str(out / "explain")])  # fmt: skip
    steps.command("deletion and insertion AUC", ["evaluate-explanations", *model, "--decoder", str(decoder), "--images", str(held_dir),
                                                 "--methods", "gradcam,ig,guided_backprop,pv", "--steps", str(preset["steps"]), "--out", str(out / "evaluate")])  # fmt: skip
    steps.command("sanity check", ["sanity-check", *model, "--decoder", str(decoder), "--images", str(held_dir), "--limit", str(preset["sanity"]),
                                   "--out", str(out / "sanity")])  # fmt: skip

    print("\n=== summary and report", flush=True)
    numbers = read_json(out / "decoder.json")
    observers = observer_summary(out, args.seed)
    dec = numbers["decoder"]
    summary = {
        "preset": args.preset, "seed": args.seed, "root": root,
        "classifier": {"arch": ARCH, "weights": "packaged", "top1": info["top1"], "photos": len(info["photos"]),
                       "wrong": sum(not r["right"] for r in info["photos"])},
        "decoder": {"ssim": dec["ssim"], "psnr": dec["psnr"], "agreement_top1": dec["agreement_top1"], "agreement_top5": dec["agreement_top5"],
                    "images": numbers["images"], "output_px": numbers["decoder_output_px"], "config": preset["config"]},
        "references": {"matched_blur": numbers["matched_blur"], "output_size": numbers["output_size"], "mean_image": numbers["mean_image"]},
        "observers": observers,
        "saliency": read_saliency(out),
    }  # fmt: skip
    summary["targets"] = {
        "classifier.top1 >= 0.85": info["top1"] >= 0.85,
        "decoder.agreement_top1 >= 0.50 and above the matched blur": dec["agreement_top1"] >= 0.5 and dec["agreement_top1"] > numbers["matched_blur"]["agreement_top1"],
        "decoder.agreement_top5 >= 0.75 and above the matched blur": dec["agreement_top5"] >= 0.75 and dec["agreement_top5"] > numbers["matched_blur"]["agreement_top5"],
        "decoder.ssim >= 0.35": dec["ssim"] >= 0.35,
        "observers.reconstruction.right >= 0.20": (observers["reconstruction"]["right"] or 0) >= 0.2,
    }  # fmt: skip
    summary["steps"], summary["seconds_this_run"] = steps.done, round(time.perf_counter() - total, 1)
    write_json(out / "summary.json", summary)
    report = write_report(out, summary, steps.done, args.preset)
    missed = [k for k, v in summary["targets"].items() if not v]
    print(f"\nreal done: open {report} (numbers in {out / 'summary.json'}; gallery in {out / 'gallery'})")
    if missed:
        print("targets missed (this run is a demo of the pipeline, not evidence about PV): " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
