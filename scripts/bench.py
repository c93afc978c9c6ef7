#!/usr/bin/env python
"""Benchmarks that print numbers and write JSON (never timed unit tests).

  python scripts/bench.py --what train --device cuda        # decoder training images/s, % of bf16 peak, memory
  python scripts/bench.py --what explain --device cuda      # PV images/s, top class and all classes
  python scripts/bench.py --what baselines --device cpu     # Grad-CAM / IG / LIME vs pytorch-grad-cam, captum, lime
  python scripts/bench.py --what limits --device cpu        # each method vs the machine's own limit and its peer (issue 23)

Results go to benchmarks/<what>_<device>.json; copy the headline numbers to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in BF16_PEAK_TFLOPS.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of `step()` after `warmup` calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def environment(device: torch.device) -> dict:
    import pytorch_lightning
    import torchvision

    info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "lightning": pytorch_lightning.__version__, "device": str(device), "threads": torch.get_num_threads(), "command": " ".join(sys.argv)}
    info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return info


def sample_files(count: int) -> list[Path]:
    folder = REPO.parent / "shared" / "data" / "imagenet_samples"
    files = sorted(folder.glob("*.JPEG"))[:count] if folder.is_dir() else []
    if not files:
        from skimage import data as skdata  # noqa: F401  (fallback: write the bundled photos as JPEGs)
        from PIL import Image
        import numpy as np

        out = Path("/tmp/pv_bench_images")
        out.mkdir(exist_ok=True)
        for i, name in enumerate(["astronaut", "chelsea", "coffee", "rocket"] * (count // 4 + 1)):
            path = out / f"{i}.jpg"
            if not path.exists():
                Image.fromarray(np.asarray(getattr(skdata, name)())).convert("RGB").save(path)
            files.append(path)
        files = files[:count]
    return files


# --------------------------------------------------------------------------------------------- train
def bench_train(args, device: torch.device) -> dict:
    from torch.utils.data import DataLoader

    from pv import DecoderModule
    from pv.data import ImageTransform
    from pv.data.cache import random_crops
    from pv.data.datasets import ImageFileDataset
    from pv.models import Decoder, FrozenEncoder

    size, batch = args.size, args.batch

    def make(channels_last: bool, compile: bool) -> tuple[DecoderModule, torch.optim.Optimizer]:
        torch.manual_seed(0)
        module = DecoderModule(FrozenEncoder(args.arch, "layer4", weights=None), Decoder(), channels_last=channels_last, compile=compile).to(device)
        module.train()
        return module, module.configure_optimizers()

    def train_step(module, optimizer, images, autocast: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = module.training_step({"image": images}, 0)
        loss.backward()
        optimizer.step()

    results = {}
    files = sample_files(max(batch * 2, 16))
    # 1. the straightforward baseline: fp32, eager, DataLoader decoding JPEGs every step
    module, optimizer = make(False, False)
    loader = DataLoader(ImageFileDataset(files, ImageTransform(size, train=True)), batch_size=batch, shuffle=True,
                        num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0)
    iterator = iter(loader)

    def baseline_step():
        nonlocal iterator
        try:
            sample = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            sample = next(iterator)
        train_step(module, optimizer, sample["image"].to(device, non_blocking=True), autocast=False)

    times = timed(baseline_step, device, args.warmup, args.repeats)
    results["baseline_fp32_eager_jpeg"] = {"images_per_s": batch / (sum(times) / len(times)), "seconds_per_step": times}
    flops_per_image = count_flops(lambda: train_step(module, optimizer, torch.rand(batch, 3, size, size, device=device), False)) / batch
    del module, optimizer, loader, iterator

    # 2. the fast path: uint8 batches already on the device (the cache), device-side crop+flip, bf16, NHWC, compile
    bf16 = device.type == "cuda" or args.cpu_bf16
    module, optimizer = make(True, args.compile)
    cached = torch.randint(0, 256, (batch, 3, size + size // 8, size + size // 8), dtype=torch.uint8, device=device)

    def fast_step():
        images = random_crops(cached, size).float().div_(255).contiguous(memory_format=torch.channels_last)
        train_step(module, optimizer, images, autocast=bf16)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = timed(fast_step, device, args.warmup + (3 if args.compile else 0), args.repeats)
    fast = {"images_per_s": batch / (sum(times) / len(times)), "seconds_per_step": times, "bf16": bf16, "channels_last": True, "compile": args.compile}
    if device.type == "cuda":
        fast["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    results["fast"] = fast
    results["speedup_vs_baseline"] = fast["images_per_s"] / results["baseline_fp32_eager_jpeg"]["images_per_s"]
    results["flops_per_image_train_step"] = flops_per_image
    results["gflops_per_image_decoder_forward"] = count_flops(lambda: Decoder().to(device)(torch.rand(1, 2048, size // 32, size // 32, device=device))) / 1e9
    peak = peak_tflops(device)
    achieved = fast["images_per_s"] * flops_per_image / 1e12
    results["achieved_tflops"] = achieved
    results["fraction_of_bf16_peak"] = achieved / peak if peak else None
    return results


# --------------------------------------------------------------------------------------------- explain
def bench_explain(args, device: torch.device) -> dict:
    from pv.explain import PerceptionVisualizer
    from pv.models import Classifier, Decoder

    torch.manual_seed(0)
    classifier = Classifier(args.arch, num_classes=20, weights=None).to(device).eval()
    decoder = Decoder().to(device).eval()
    if device.type == "cuda":
        classifier, decoder = classifier.to(memory_format=torch.channels_last), decoder.to(memory_format=torch.channels_last)
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    bf16 = device.type == "cuda" or args.cpu_bf16
    visualizer = PerceptionVisualizer(classifier, decoder)  # the one PV pipeline (closed-form Grad-CAM, one forward)
    all_targets = torch.arange(classifier.num_classes, device=device).expand(args.batch, -1)  # (B, 20)

    @torch.no_grad()
    def pv(all_classes: bool) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return visualizer(images, all_targets if all_classes else None)["pv"]  # (B, K, 3, H, W)

    results = {}
    for name, all_classes in (("pv_top_class", False), ("pv_all_20_classes", True)):
        times = timed(lambda: pv(all_classes), device, args.warmup, args.repeats)
        results[name] = {"images_per_s": args.batch / (sum(times) / len(times)), "seconds_per_batch": times}
    results["bf16"] = bf16
    return results


# --------------------------------------------------------------------------------------------- baselines
def bench_baselines(args, device: torch.device) -> dict:
    from pv.explain import SALIENCY
    from pv.models import Classifier

    torch.manual_seed(0)
    model = Classifier(args.arch, num_classes=20, weights=None).to(device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 20, (args.batch,), device=device)
    results = {}

    ours = SALIENCY["gradcam"](model)
    times = timed(lambda: ours(images, targets), device, args.warmup, args.repeats)
    results["gradcam_pv"] = {"images_per_s": args.batch / (sum(times) / len(times))}
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = GradCAM(model=model, target_layers=[model.trunk.layer4[-1]])
        cam_targets = [ClassifierOutputTarget(int(t)) for t in targets]
        times = timed(lambda: cam(input_tensor=images, targets=cam_targets), device, args.warmup, args.repeats)
        results["gradcam_pytorch_grad_cam"] = {"images_per_s": args.batch / (sum(times) / len(times))}
        results["gradcam_speedup"] = results["gradcam_pv"]["images_per_s"] / results["gradcam_pytorch_grad_cam"]["images_per_s"]
    except ImportError:
        results["gradcam_pytorch_grad_cam"] = "grad-cam not installed (pip install grad-cam)"

    one, target = images[:1], targets[:1]
    ig = SALIENCY["ig"](model, n_steps=50)
    times = timed(lambda: ig.attribute(one, target), device, 1, max(2, args.repeats // 2))
    results["ig_50_steps_pv"] = {"seconds_per_image": sum(times) / len(times)}
    from captum.attr import IntegratedGradients

    captum_ig = IntegratedGradients(model)
    times = timed(lambda: captum_ig.attribute(one, target=target, n_steps=50), device, 1, max(2, args.repeats // 2))
    results["ig_50_steps_captum_default"] = {"seconds_per_image": sum(times) / len(times)}

    lime = SALIENCY["lime"](model, n_samples=args.lime_samples)
    times = timed(lambda: lime.attribute(one, target), device, 0, 2)
    results["lime_pv"] = {"seconds_per_image": sum(times) / len(times), "n_samples": args.lime_samples}
    try:
        import numpy as np
        from lime import lime_image

        explainer = lime_image.LimeImageExplainer(random_state=0)
        image_np = one[0].permute(1, 2, 0).cpu().numpy().astype(np.float64)

        def predict(batch_np):
            with torch.no_grad():
                x = torch.from_numpy(batch_np).permute(0, 3, 1, 2).float().to(device)
                return torch.sigmoid(model(x)).cpu().numpy()

        times = timed(lambda: explainer.explain_instance(image_np, predict, labels=(int(target),), top_labels=None,
                                                         num_samples=args.lime_samples, batch_size=64, random_seed=0), device, 0, 2)
        results["lime_package"] = {"seconds_per_image": sum(times) / len(times), "n_samples": args.lime_samples}
    except ImportError:
        results["lime_package"] = "lime not installed (pip install lime)"
    return results


def bench_explain_processes(args, device: torch.device, images: int = 8, size: int = 64) -> dict:
    """`pv explain` end to end (Trainer.predict, figures, index) on CPU at 1 and 2 processes (ddp, gloo): images/s.

    resnet18 with random weights and Grad-CAM on `images` synthetic images of `size` px; each run in a fresh folder."""
    import os
    import subprocess
    import tempfile
    import time

    import numpy as np
    from PIL import Image

    from pv.models import Classifier

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        rng = np.random.default_rng(0)
        for i in range(images):
            Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(tmp / "images" / f"{i:03d}.png")
        classifier = Classifier("resnet18", num_classes=4, weights=None)
        torch.save({"state_dict": {"model." + k: v for k, v in classifier.state_dict().items()}, "classifier_config": classifier.config}, tmp / "cls.ckpt")
        for processes in (1, 2):
            command = [sys.executable, "-m", "pv.cli", "explain", "--classifier", str(tmp / "cls.ckpt"), "--images", str(tmp / "images"),
                       "--methods", "gradcam", "--topk", "1", "--image-size", str(size), "--batch-size", "2", "--out", str(tmp / f"out{processes}"),
                       "--accelerator", "cpu", "--devices", str(processes), "--strategy", "ddp" if processes > 1 else "auto"]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)})
            seconds = time.perf_counter() - start
            results[f"pv_explain_cpu_{processes}proc"] = {"images": images, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 2)}
    return results


# --------------------------------------------------------------------------------------------- speed (issue 13)
def bench_speed(args, device: torch.device) -> dict:
    """Each method at fp32 and at the precision `auto` picks, next to its peer measured in the same run.

    Peers at their defaults: pytorch-grad-cam GradCAM (fp32, NCHW), captum IntegratedGradients (50
    steps, gausslegendre, all steps in one batch), the `lime` package (quickshift, batch 10, a predict
    function written the usual way: NHWC numpy -> permute -> float). pv's LIME uses SLIC (50 segments).
    """
    import copy

    import numpy as np

    from pv.explain import IntegratedGradients, Lime, PerceptionVisualizer, build_saliency
    from pv.models import Classifier, Decoder, FrozenEncoder
    from pv.models.precision import autocast, describe_precision, prepare_model, resolve_precision

    torch.manual_seed(0)
    base = Classifier(args.arch, num_classes=20, weights=None).eval()
    fp32_model = copy.deepcopy(base).to(device)  # today's path: fp32, NCHW
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 20, (args.batch,), device=device)
    one, target = images[:1], targets[:1]
    results: dict = {"precision_auto": {m: describe_precision("auto", device, m) for m in ("gradcam", "ig", "lime", None)}}

    def run_at(precision: str, method: str | None = None):
        """(model prepared for `precision`, the precision actually used)."""
        chosen = resolve_precision(precision, device, method)
        return prepare_model(copy.deepcopy(base), chosen, device), chosen

    def rate(fn, n_images: int, warmup: int, repeats: int) -> dict:
        times = timed(fn, device, warmup, repeats)
        return {"images_per_s": round(n_images / min(times), 3), "seconds": [round(t, 3) for t in times]}

    # Grad-CAM, batch `args.batch`
    from pytorch_grad_cam import GradCAM as PeerGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    peer = PeerGradCAM(model=fp32_model, target_layers=[fp32_model.trunk.layer4[-1]])
    peer_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    results["gradcam_pytorch_grad_cam"] = rate(lambda: peer(input_tensor=images, targets=peer_targets), args.batch, 1, args.repeats)
    peer_maps = torch.from_numpy(peer(input_tensor=images, targets=peer_targets))  # (B, H, W), min-max per image
    for label, precision in (("fp32", "32"), ("auto", "auto")):
        model, chosen = run_at(precision, "gradcam")
        method = build_saliency("gradcam", model, normalization="minmax")
        with autocast(chosen, device):
            results[f"gradcam_pv_{label}"] = rate(lambda: method(images, targets), args.batch, 1, args.repeats) | {"precision": chosen}
            maps = method(images, targets)[:, 0].cpu()
        r = [float(np.corrcoef(a.flatten(), b.flatten())[0, 1]) for a, b in zip(maps.numpy(), peer_maps.numpy()) if a.std() > 0 and b.std() > 0]
        results[f"gradcam_pv_{label}"]["r_vs_pytorch_grad_cam_min"] = round(min(r), 4) if r else None  # None: constant maps
        results[f"gradcam_speedup_{label}"] = round(results[f"gradcam_pv_{label}"]["images_per_s"] / results["gradcam_pytorch_grad_cam"]["images_per_s"], 2)
        if label == "auto":  # how cost grows with the work
            for batch in (1, 8, 32):
                x, t = torch.rand(batch, 3, args.size, args.size, device=device), torch.randint(0, 20, (batch,), device=device)
                with autocast(chosen, device):
                    results[f"gradcam_pv_auto_batch{batch}"] = rate(lambda: method(x, t), batch, 1, max(1, args.repeats - 1))

    # PV, top class: today's fp32 path vs auto (bf16 + channels_last where auto picks it)
    torch.manual_seed(1)
    decoder = Decoder(base.head.in_features).eval()  # the paper's decoder on the last feature layer
    for label, precision in (("fp32", "32"), ("auto", "auto")):
        model, chosen = run_at(precision)
        visualizer = PerceptionVisualizer(model, prepare_model(copy.deepcopy(decoder), chosen, device) if label == "auto" else copy.deepcopy(decoder).to(device))
        with autocast(chosen, device):
            results[f"pv_top_class_{label}"] = rate(lambda: visualizer(images), args.batch, 1, args.repeats) | {"precision": chosen}
    results["pv_speedup"] = round(results["pv_top_class_auto"]["images_per_s"] / results["pv_top_class_fp32"]["images_per_s"], 2)

    # Integrated Gradients, one image
    from captum.attr import IntegratedGradients as PeerIG

    with torch.no_grad():
        difference = float(fp32_model(one)[0, target] - fp32_model(torch.zeros_like(one))[0, target])
    peer_ig = PeerIG(fp32_model)
    attributions = []
    results["ig_captum_50_steps"] = rate(lambda: attributions.append(peer_ig.attribute(one, target=target, n_steps=50)), 1, 0, 1)
    results["ig_captum_50_steps"]["completeness_error"] = round(abs(float(attributions[-1].sum()) - difference) / abs(difference), 5)
    for label, precision in (("fp32", "32"), ("auto", "auto"), ("bf16", "bf16")):
        model, chosen = run_at(precision, "ig")
        method = IntegratedGradients(model)  # pv's defaults: 16 Gauss-Legendre steps, more only where completeness > 2%
        attributions = []
        with autocast(chosen, device):
            results[f"ig_pv_{label}"] = rate(lambda: attributions.append(method.attribute(one, target)), 1, 0, 1) | {"precision": chosen}
        attribution = attributions[-1]
        results[f"ig_pv_{label}"] |= {"steps": int(method.steps[0]), "completeness_error": round(abs(float(attribution.sum()) - difference) / abs(difference), 5)}
        results[f"ig_speedup_{label}"] = round(results[f"ig_pv_{label}"]["images_per_s"] / results["ig_captum_50_steps"]["images_per_s"], 2)

    # LIME, one image, `args.lime_samples` samples
    from lime import lime_image

    image_np = one[0].permute(1, 2, 0).cpu().numpy().astype(np.float64)

    def predict(batch_np):
        with torch.no_grad():
            return torch.softmax(fp32_model(torch.from_numpy(batch_np).permute(0, 3, 1, 2).float().to(device)), 1).cpu().numpy()

    explainer = lime_image.LimeImageExplainer(random_state=0)
    results["lime_package"] = rate(lambda: explainer.explain_instance(image_np, predict, labels=(int(target),), top_labels=None,
                                                                      num_samples=args.lime_samples, random_seed=0), 1, 0, 1)  # fmt: skip
    for label, precision in (("fp32", "32"), ("auto", "auto")):
        model, chosen = run_at(precision, "lime")
        method = Lime(model, n_samples=args.lime_samples, activation="softmax")
        with autocast(chosen, device):
            results[f"lime_pv_{label}"] = rate(lambda: method.attribute(one, target), 1, 0, 1) | {"precision": chosen}
        results[f"lime_speedup_{label}"] = round(results[f"lime_pv_{label}"]["images_per_s"] / results["lime_package"]["images_per_s"], 2)

    # decoder training step, paper decoder on layer4: today's fp32 vs bf16 autocast + channels_last
    train_batch = args.train_batch
    x = torch.rand(train_batch, 3, args.size, args.size, device=device)
    from pv.losses import PerceptionLoss

    for label, bf16 in (("fp32", False), ("bf16_channels_last", True)):
        torch.manual_seed(0)
        encoder = FrozenEncoder(args.arch, "layer4", weights=None).to(device)
        decoder, loss = Decoder(encoder.out_channels).to(device).train(), PerceptionLoss()
        batch_images = x
        if bf16:
            encoder, decoder = encoder.to(memory_format=torch.channels_last), decoder.to(memory_format=torch.channels_last)
            batch_images = x.contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                with torch.no_grad():
                    latent = encoder(batch_images)
                terms = loss(decoder(latent), batch_images, encoder, latent)
            terms.total.backward()
            optimizer.step()

        results[f"decoder_train_step_{label}"] = rate(step, train_batch, 1, max(1, args.repeats - 1))
    results["decoder_train_speedup"] = round(results["decoder_train_step_bf16_channels_last"]["images_per_s"] / results["decoder_train_step_fp32"]["images_per_s"], 2)
    results["targets"] = speed_targets(results, device)
    return results


def speed_targets(results: dict, device: torch.device) -> dict:
    """Issue 13's CPU targets, met or not (GPU targets of the performance issue are listed when on CUDA)."""
    if device.type == "cuda":
        return {"note": "GPU: compare with the performance issue's H100 targets (PV >= 5,000 img/s, IG <= 30 ms/img, LIME <= 0.5 s/img)"}
    gradcam = results["gradcam_speedup_auto"]
    return {
        "gradcam >= 8x pytorch-grad-cam, r >= 0.98": f"{gradcam}x, r {results['gradcam_pv_auto']['r_vs_pytorch_grad_cam_min']}: " + ("met" if gradcam >= 8 and (results["gradcam_pv_auto"]["r_vs_pytorch_grad_cam_min"] or 0) >= 0.98 else "not met"),
        "pv top class >= 4x today's fp32": f"{results['pv_speedup']}x: " + ("met" if results["pv_speedup"] >= 4 else "not met"),
        "ig >= 5x captum (50 steps), completeness <= 2%": f"auto {results['ig_speedup_auto']}x ({results['ig_pv_auto']['completeness_error']:.2%}), bf16 {results['ig_speedup_bf16']}x ({results['ig_pv_bf16']['completeness_error']:.2%}): " + ("met" if results["ig_speedup_auto"] >= 5 and results["ig_pv_auto"]["completeness_error"] <= 0.02 else "not met at auto"),
        "lime >= 3x the lime package": f"{results['lime_speedup_auto']}x: " + ("met" if results["lime_speedup_auto"] >= 3 else "not met"),
        "decoder training >= 2.5x today's fp32 step": f"{results['decoder_train_speedup']}x: " + ("met" if results["decoder_train_speedup"] >= 2.5 else "not met"),
    }  # fmt: skip


# --------------------------------------------------------------------------------------------- limits (issue 23)
def cpu_description() -> dict:
    """The CPU's name, family/model and the flags that decide its speed (/proc/cpuinfo; empty elsewhere)."""
    from pv.models.precision import cpu_flags

    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"name": fields.get("model name", platform.processor() or platform.machine()), "family": fields.get("cpu family"), "model": fields.get("model"),
            "threads": torch.get_num_threads(), "flags": {flag: flag in cpu_flags() for flag in wanted}}  # fmt: skip


def per_image(step, images: int, repeats: int, min_images: int = 16) -> dict:
    """Median wall seconds (and process CPU seconds) per image of `step()`, which handles `images` images;
    one warm-up call, then `repeats` timings, each over at least `min_images` images."""
    step()
    calls = max(1, -(-min_images // images))
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            step()
        walls.append((time.perf_counter() - wall) / (calls * images))
        cpus.append((time.process_time() - cpu) / (calls * images))
    return {"s_per_image": sorted(walls)[len(walls) // 2], "cpu_s_per_image": sorted(cpus)[len(cpus) // 2], "walls": [round(t, 4) for t in walls]}


def best_rate(model: torch.nn.Module, shape: tuple[int, ...], precision: str, device: torch.device, batches: list[int], repeats: int,
              backward: bool = False, min_images: int = 16) -> dict:
    """The machine's best seconds per input for `model` on inputs of `shape` (C, H, W) at `precision`, forward
    only or forward + backward to the input: every batch in `batches` in channels_last (oneDNN's layout),
    then NCHW at the best of those batches."""
    import copy

    from pv.models.precision import autocast

    def rate(channels_last: bool, batch: int) -> dict:
        net = copy.deepcopy(model).to(device).eval()
        x = torch.rand(batch, *shape, device=device)
        if channels_last:
            net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

        def step():
            with autocast(precision, device):
                if backward:
                    inputs = x.detach().requires_grad_(True)
                    torch.autograd.grad(net(inputs)[:, 0].sum(), inputs)
                else:
                    with torch.inference_mode():
                        net(x)

        return per_image(step, batch, repeats, min_images=min_images)

    sweep = {f"nhwc_b{batch}": rate(True, batch) for batch in batches}
    best_batch = int(min(sweep, key=lambda k: sweep[k]["s_per_image"]).partition("_b")[2])
    sweep[f"nchw_b{best_batch}"] = rate(False, best_batch)
    best = min(sweep, key=lambda k: sweep[k]["s_per_image"])
    return {"s_per_image": sweep[best]["s_per_image"], "best": best, "sweep": {k: round(v["s_per_image"], 4) for k, v in sweep.items()}}


def bench_limits(args, device: torch.device) -> dict:
    """Per method: pv's time, the machine's limit measured in the same process, the peer's time at its defaults.

    limit = the model evaluations the method cannot avoid at the best throughput this machine gives them
    (best batch size and memory format, at the precision `auto` picks): Grad-CAM one forward per image, PV
    one classifier forward + one decoder forward, LIME n_samples forwards, IG its steps' forward + backward.
    Peers get the model as a user hands it (fp32, NCHW) and run at their defaults: pytorch-grad-cam
    GradCAM, captum IntegratedGradients (50 Gauss-Legendre steps in one batch), the `lime` package
    (quickshift, batch 10, a predict function written the usual way: NHWC numpy -> permute -> float).
    """
    import copy

    import numpy as np

    from pv.explain import IntegratedGradients, Lime, PerceptionVisualizer, build_saliency
    from pv.models import Classifier, Decoder
    from pv.models.precision import autocast, describe_precision, prepare_model, resolve_precision

    torch.manual_seed(0)
    base = Classifier(args.arch, num_classes=20, weights=None).eval()
    decoder = Decoder(base.head.in_features).eval()  # the paper's decoder on the last feature layer
    peer_model = copy.deepcopy(base).to(device)  # what a user hands a peer: fp32, NCHW
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 20, (args.batch,), device=device)
    one, target = images[:1], targets[:1]
    reps = args.repeats
    precision = {m or "pv": resolve_precision("auto", device, m) for m in ("gradcam", "lime", "ig", None)}
    results: dict = {"cpu": cpu_description() if device.type == "cpu" else None,
                     "precision_auto": {m: describe_precision("auto", device, None if m == "pv" else m) for m in precision}}  # fmt: skip

    def prepared(method: str) -> torch.nn.Module:
        return prepare_model(copy.deepcopy(base), precision[method], device)

    # the machine's limits: forward, forward + backward, decoder forward, at the best batch and format
    shape = (3, args.size, args.size)
    forward = best_rate(base, shape, precision["pv"], device, [1, 4, 10, 16, 32], reps, min_images=10)
    backward = best_rate(base, shape, precision["ig"], device, [4, 10], reps, backward=True, min_images=10)
    with torch.no_grad():
        latent_shape = tuple(base.forward_features(one.cpu()).shape[1:])
    decoding = best_rate(decoder, latent_shape, precision["pv"], device, [1, 2, 4, 8], reps, min_images=4)
    results["limits"] = {"forward": forward, "forward_backward": backward, "decoder_forward": decoding}

    def row(pv: float, limit: float, peer: float | None, **extra) -> dict:
        out = {"pv_s": round(pv, 3), "limit_s": round(limit, 3), "pv_over_limit": round(pv / limit, 2)}
        if peer is not None:
            out |= {"peer_s": round(peer, 3), "peer_over_pv": round(peer / pv, 2)}
        return out | extra

    # Grad-CAM, batch `args.batch`: pv (closed form) vs pytorch-grad-cam
    print("limits: Grad-CAM", time.strftime("%H:%M:%S"), file=sys.stderr, flush=True)
    from pytorch_grad_cam import GradCAM as PeerGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    peer = PeerGradCAM(model=peer_model, target_layers=[peer_model.trunk.layer4[-1]])
    peer_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    peer_time = per_image(lambda: peer(input_tensor=images, targets=peer_targets), args.batch, reps)
    peer_maps = torch.from_numpy(peer(input_tensor=images, targets=peer_targets))  # (B, H, W), min-max per image
    method = build_saliency("gradcam", prepared("gradcam"), normalization="minmax")
    with autocast(precision["gradcam"], device):
        ours = per_image(lambda: method(images, targets), args.batch, reps)
        maps = method(images, targets)[:, 0].cpu()  # (B, H, W)
    r = [float(np.corrcoef(a.flatten(), b.flatten())[0, 1]) for a, b in zip(maps.numpy(), peer_maps.numpy()) if a.std() > 0 and b.std() > 0]
    results["gradcam"] = row(ours["s_per_image"] * args.batch, forward["s_per_image"] * args.batch, peer_time["s_per_image"] * args.batch,
                             images=args.batch, r_vs_peer_min=round(min(r), 4) if r else None)  # fmt: skip

    # PV, top class, batch `args.batch`: classifier + decoder + closed-form Grad-CAM (no peer package)
    print("limits: PV", time.strftime("%H:%M:%S"), file=sys.stderr, flush=True)
    visualizer = PerceptionVisualizer(prepared("pv"), prepare_model(copy.deepcopy(decoder), precision["pv"], device))
    with autocast(precision["pv"], device):
        ours = per_image(lambda: visualizer(images), args.batch, max(2, reps - 1))
    limit = (forward["s_per_image"] + decoding["s_per_image"]) * args.batch
    results["pv"] = row(ours["s_per_image"] * args.batch, limit, None, images=args.batch)

    # Integrated Gradients, one image, defaults: pv vs captum (50 steps)
    print("limits: Integrated Gradients", time.strftime("%H:%M:%S"), file=sys.stderr, flush=True)
    from captum.attr import IntegratedGradients as PeerIG

    with torch.no_grad():
        difference = float(peer_model(one)[0, target] - peer_model(torch.zeros_like(one))[0, target])
    peer_ig, attributions = PeerIG(peer_model), []
    peer_time = per_image(lambda: attributions.append(peer_ig.attribute(one, target=target, n_steps=50)), 1, max(1, reps - 1), min_images=1)
    peer_error = abs(float(attributions[-1].sum()) - difference) / abs(difference)
    ig, attributions = IntegratedGradients(prepared("ig")), []
    with autocast(precision["ig"], device):
        ours = per_image(lambda: attributions.append(ig.attribute(one, target)), 1, max(1, reps - 1), min_images=1)
    steps = int(ig.steps[0])
    evaluated = sum(ig.n_steps * 2**i for i in range(int(np.log2(steps // ig.n_steps)) + 1))  # 16, then 32, ... until the bound holds
    results["ig"] = row(ours["s_per_image"], steps * backward["s_per_image"], peer_time["s_per_image"], steps=steps, steps_evaluated=evaluated,
                        completeness_error=round(abs(float(attributions[-1].sum()) - difference) / abs(difference), 5),
                        peer_completeness_error=round(peer_error, 5))  # fmt: skip

    # LIME, one image, `args.lime_samples` samples: pv (SLIC) vs the lime package (quickshift), alternated
    print("limits: LIME", time.strftime("%H:%M:%S"), file=sys.stderr, flush=True)
    from lime import lime_image

    image_np = one[0].permute(1, 2, 0).cpu().numpy().astype(np.float64)

    def predict(batch_np):
        with torch.no_grad():
            return torch.softmax(peer_model(torch.from_numpy(batch_np).permute(0, 3, 1, 2).float().to(device)), 1).cpu().numpy()

    explainer = lime_image.LimeImageExplainer(random_state=0)
    lime = Lime(prepared("lime"), n_samples=args.lime_samples, activation="softmax")
    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    for _ in range(args.lime_repeats):
        start, cpu = time.perf_counter(), time.process_time()
        with autocast(precision["lime"], device):
            lime.attribute(one, target)
        ours.append(time.perf_counter() - start)
        ours_cpu.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        explainer.explain_instance(image_np, predict, labels=(int(target),), top_labels=None, num_samples=args.lime_samples, random_seed=0)
        theirs.append(time.perf_counter() - start)
        theirs_cpu.append(time.process_time() - cpu)
    results["lime"] = row(float(np.median(ours)), args.lime_samples * forward["s_per_image"], float(np.median(theirs)),
                          n_samples=args.lime_samples, pv_runs=[round(t, 1) for t in ours], peer_runs=[round(t, 1) for t in theirs],
                          pv_cpu_s=round(float(np.median(ours_cpu)), 1), peer_cpu_s=round(float(np.median(theirs_cpu)), 1))  # fmt: skip
    results["table"] = limits_table(results)
    return results


def limits_table(results: dict) -> str:
    """The markdown table of `bench_limits` (pv / limit / peer / ratios) with the targets of issue 23."""
    names = {"gradcam": "Grad-CAM, batch {images}", "pv": "PV top class, batch {images}", "ig": "IG, 1 image (pv {steps} steps; captum 50)",
             "lime": "LIME, 1 image, {n_samples} samples"}  # fmt: skip
    peers = {"gradcam": "pytorch-grad-cam", "pv": "", "ig": "captum", "lime": "lime (quickshift)"}
    lines = ["| method | pv (s) | limit (s) | pv / limit | peer (s) | peer / pv | target | |", "|---|---|---|---|---|---|---|---|"]
    for key, name in names.items():
        row = results[key]
        if key == "ig":
            target, met = ">= 5x captum, completeness <= 2%", row["peer_over_pv"] >= 5 and row["completeness_error"] <= 0.02
        else:
            target = "<= 1.25x limit" + (", >= 1x peer" if key == "lime" else ", never slower than the peer" if "peer_s" in row else "")
            met = row["pv_over_limit"] <= 1.25 and row.get("peer_over_pv", 1) >= 1
        peer = f"{peers[key]} {row['peer_s']}" if "peer_s" in row else "n/a"
        lines.append(f"| {name.format(**row)} | {row['pv_s']} | {row['limit_s']} | {row['pv_over_limit']}x | {peer} | "
                     f"{str(row['peer_over_pv']) + 'x' if 'peer_s' in row else ''} | {target} | {'met' if met else 'not met'} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=["train", "explain", "baselines", "explain-processes", "speed", "limits"], required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224, help="image size (px)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 256 on cuda for train, 64 explain; 8 on cpu)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers for the JPEG baseline")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile encoder and decoder in the fast path")
    parser.add_argument("--cpu-bf16", action="store_true", help="use bf16 autocast on CPU too")
    parser.add_argument("--lime-samples", type=int, default=1000)
    parser.add_argument("--lime-repeats", type=int, default=2, help="--what limits: LIME runs of pv and of the lime package, alternated")
    parser.add_argument("--train-batch", type=int, default=8, help="--what speed: decoder training batch")
    parser.add_argument("--out", default=str(REPO / "benchmarks"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.batch is None:
        args.batch = (256 if args.what == "train" else 64) if device.type == "cuda" else 8
    warnings.filterwarnings("ignore")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    bench = {"train": bench_train, "explain": bench_explain, "baselines": bench_baselines, "explain-processes": bench_explain_processes, "speed": bench_speed, "limits": bench_limits}[args.what]
    results = {"what": args.what, "batch": args.batch, "size": args.size, "arch": args.arch, "env": environment(device), "results": bench(args, device)}
    out = Path(args.out) / f"{args.what}_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for key, value in results["results"].items():
        if key == "table":
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if not isinstance(v, list)}
        print(f"{key:32s} {value}")
    if "table" in results["results"]:
        print(results["results"]["table"])
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
