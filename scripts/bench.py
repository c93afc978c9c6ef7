#!/usr/bin/env python
"""Benchmarks that print numbers and write JSON (never timed unit tests).

  python scripts/bench.py --what train --device cuda        # decoder training images/s, % of bf16 peak, memory
  python scripts/bench.py --what explain --device cuda      # PV images/s, top class and all classes
  python scripts/bench.py --what baselines --device cpu     # Grad-CAM / IG / LIME vs pytorch-grad-cam, captum, lime

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=["train", "explain", "baselines"], required=True)
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
    parser.add_argument("--out", default=str(REPO / "benchmarks"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.batch is None:
        args.batch = (256 if args.what == "train" else 64) if device.type == "cuda" else 8
    warnings.filterwarnings("ignore")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    bench = {"train": bench_train, "explain": bench_explain, "baselines": bench_baselines}[args.what]
    results = {"what": args.what, "batch": args.batch, "size": args.size, "arch": args.arch, "env": environment(device), "results": bench(args, device)}
    out = Path(args.out) / f"{args.what}_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for key, value in results["results"].items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if not isinstance(v, list)}
        print(f"{key:32s} {value}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
