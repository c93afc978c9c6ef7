"""`pv sanity-check`: cascading randomisation of the classifier; how much PV and Grad-CAM change."""
from __future__ import annotations

import json
from pathlib import Path

from pv.commands.common import CommandParser, UsageError, add_classifier_arguments, classifier_from_arguments, classifier_name, positive_int, resolve_device


def parser() -> CommandParser:
    p = CommandParser("pv sanity-check", "Re-initialise the classifier's layers from the top down (Adebayo et al. 2018) and "
                      "measure by SSIM how much PV and Grad-CAM of the original top class change; writes sanity.json and sanity.png.")  # fmt: skip
    add_classifier_arguments(p)
    p.add_argument("--decoder", required=True, help="PV decoder checkpoint trained on that classifier's latent")
    p.add_argument("--images", required=True, help="folder of images, or a .txt file with one image path per line (the first --limit are used)")
    p.add_argument("--limit", type=positive_int, default=32, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-initialisations")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    import torch

    from pv.data import list_images, load_image
    from pv.data.transforms import classifier_transform
    from pv.explain.sanity import cascading_randomization, plot_cascade
    from pv.models import Classifier, load_decoder

    args = parser().parse_args(argv)
    device = resolve_device(args.device)
    classifier = classifier_from_arguments(args, device)
    if not isinstance(classifier, Classifier):
        raise UsageError(f"pv sanity-check randomises a trunk and a linear head on pooled features; {classifier_name(args)} has none (ViTs and wrapped models are not supported)")
    decoder, encoder_config = load_decoder(args.decoder)
    listing = Path(args.images)
    if listing.suffix == ".txt" and listing.is_file():
        paths = [Path(line.strip()) for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()][: args.limit]
    else:
        paths = sorted(list_images(args.images))[: args.limit]
    transform = classifier_transform(classifier)  # the classifier's own preprocessing (timm: short side, centre crop)
    images = torch.stack([transform(load_image(p), str(p)) for p in paths]).to(device)  # (B, 3, S, S)
    result = cascading_randomization(classifier, decoder.to(device).eval(), encoder_config, images, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_cascade(result, out / "sanity.png", title=f"Cascading randomisation, {len(paths)} images")
    summary = {"images": len(paths), "steps": result["steps"],
               "pv_ssim": result["pv"].mean(dim=1).tolist(), "gradcam_ssim": result["gradcam"].mean(dim=1).tolist(),
               "pv_ssim_randomized": float(result["pv"][-1].mean()), "gradcam_ssim_randomized": float(result["gradcam"][-1].mean())}  # fmt: skip
    from pv.atomic import write_text

    write_text(out / "sanity.json", json.dumps(summary, indent=2) + "\n")
    for step, pv_value, cam_value in zip(summary["steps"], summary["pv_ssim"], summary["gradcam_ssim"]):
        print(f"{step:<10} PV SSIM {pv_value:.3f}   Grad-CAM SSIM {cam_value:.3f}")
    print(f"Wrote {out / 'sanity.json'} and {out / 'sanity.png'}")
    return 0
