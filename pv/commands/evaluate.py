"""`pv evaluate-explanations`: deletion / insertion AUC of saliency methods (and of PV's mask) for the top class,
and the decoder's reconstruction metrics, over an image folder."""
from __future__ import annotations

from pathlib import Path

import torch

from pv.atomic import write_text
from pv.commands.common import (
    CommandParser, UsageError, activation_of, add_classifier_arguments, add_encoder_mismatch_argument, add_folder_arguments, add_image_arguments,
    add_pv_saliency_argument,
    add_saliency_arguments, check_latent_size, classifier_from_arguments, classifier_name, input_size_of, make_saliency,
    make_visualizer, parse_list, positive_int, prepare_output_dir, probabilities, saliency_names,
    saliency_options, add_job_arguments, devices_from_arguments, params_sha256, settings_of, output_name,
    add_precision_argument, job_device, resolve_precisions, DELETION_BATCH, MODEL,
)  # fmt: skip
from pv.data.batches import NoImagesError, image_paths, image_transform
from pv.data.results import ImageItem, ResultStore
from pv.lit.predict import is_main_process, run_images
from pv.explain.evaluate import MODES, auc, curves_figure, decoder_metrics, deletion_insertion_curves, write_table
from pv.explain.figures import Entry, write_index
from pv.models.precision import autocast

PV = "pv"


def parser() -> CommandParser:
    p = CommandParser(
        prog="pv evaluate-explanations",
        description="Deletion and insertion AUC (Petsiuk et al.) of saliency methods for the top class, and the decoder's "
        "SSIM, PSNR, latent error and top-class agreement, over an image folder. `pv` scores the mask PV shows "
        "(--pv-saliency through the decoder's latent layer). Writes CSV + Markdown tables, curves.png and index.html.",
    )
    add_classifier_arguments(p)
    p.add_argument("--decoder", metavar="CKPT", help="pv decoder checkpoint, or a folder / Hub id from pv export: adds the reconstruction metrics; needed by --methods pv")
    add_encoder_mismatch_argument(p)
    add_folder_arguments(p)
    p.add_argument("--methods", default="gradcam", help=f"comma-separated: {PV}, {', '.join(saliency_names())}")
    add_pv_saliency_argument(p)
    p.add_argument("--steps", type=positive_int, default=32, help="points on each deletion / insertion curve")
    p.add_argument("--limit", type=positive_int, help="use only the first N images (default: all)")
    add_image_arguments(p)
    add_saliency_arguments(p)
    add_precision_argument(p)
    add_job_arguments(p)
    return p


SETTINGS = ("methods", "pv_saliency", "steps", "image_size", "activation", "layer", "ig_steps", "ig_baseline", "lime_samples",
            "lime_segments", "normalization", "blur", "tv", "seed")  # what shapes each image's results


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    methods = parse_list(args.methods, [PV, *saliency_names()], "--methods")
    if PV in methods and not args.decoder:
        raise UsageError("--methods pv needs --decoder CKPT: PV is scored through the mask it shows, which depends on the decoder's latent layer")
    where = devices_from_arguments(args)
    out = prepare_output_dir(args.out)
    root = Path(args.images)
    paths = image_paths(root)[: args.limit]
    cpu = torch.device("cpu")  # Lightning puts the models on each rank's device
    model = classifier_from_arguments(args, cpu)
    activation = activation_of(model, args.activation)
    image_size = input_size_of(model, args.image_size)
    options = saliency_options(args, activation)
    saliencies = {name: make_saliency(name, model, options) for name in methods if name != PV}
    visualizer = None
    if args.decoder:
        saliency = make_saliency(args.pv_saliency, model, options) if PV in methods else None
        visualizer = make_visualizer(
            model, args.decoder, cpu, saliency, classifier=classifier_name(args),
            allow_mismatch=args.allow_encoder_mismatch, normalization=args.normalization,
        )  # fmt: skip
    layers = {s.layer_name for s in saliencies.values() if getattr(s, "layer_name", None)} | ({visualizer.latent_name} if visualizer else set())
    for layer in sorted(layers):
        check_latent_size(model, layer, image_size)
    # the deletion / insertion curves and the decoder run as plain model calls; "pv" takes --pv-saliency's precision
    precisions = resolve_precisions(args.precision, job_device(where), list(saliencies) + ([args.pv_saliency] if PV in methods else []),
                                    announce=is_main_process())  # fmt: skip
    method_precision = {name: precisions[args.pv_saliency if name == PV else name] for name in methods}
    where.precision = "bf16" if "bf16" in precisions.values() else "32"
    deletion_batch = args.internal_batch_size or DELETION_BATCH
    store = ResultStore(out, "evaluate-explanations")
    fingerprint = {
        "classifier": {"name": classifier_name(args), "params_sha256": params_sha256(model)},
        "decoders": {Path(args.decoder).name: params_sha256(visualizer.decoder)} if visualizer else {},
        "settings": settings_of(args, SETTINGS) | {"image_size": image_size, "activation": activation, "precision": precisions},
    }
    store.check_manifest(fingerprint, write=is_main_process())

    def step(images: torch.Tensor, items: list[dict]) -> list[dict]:
        """Deletion / insertion curves of each method for the top class, and the decoder's metrics, per image."""
        with torch.no_grad(), autocast(precisions[MODEL], images.device):
            logits = model(images)  # (B, K)
        targets = probabilities(logits, activation).argmax(1)  # (B,) explain the top class
        maps_by_method = {}  # name -> (B, 1, H, W) in [0, 1], normalised in fp32 (outside autocast)
        for name, method in saliencies.items():
            with autocast(precisions[name], images.device):
                raw = method.attribute(images, targets)
            maps_by_method[name] = method.to_maps(raw.float(), images.shape[-2:])
        if PV in methods:
            with autocast(method_precision[PV], images.device):
                maps_by_method[PV] = visualizer(images, targets)["saliency"][:, 0].float()  # (B, 1, H, W): the mask PV shows
        with autocast(precisions[MODEL], images.device):  # the scores along each curve are fp32 (probabilities of fp32 logits)
            curves = {
                name: {
                    mode: deletion_insertion_curves(model, images, maps_by_method[name], targets, mode=mode, n_steps=args.steps,
                                                    batch_size=deletion_batch, activation=activation)  # (B, T)
                    for mode in MODES
                }
                for name in methods
            }  # fmt: skip
        # the decoder's metrics (SSIM, PSNR, latent errors) compare fp32 tensors: measured in fp32 whatever --precision
        metrics = decoder_metrics(visualizer, images) if visualizer is not None else {}  # name -> (B,)
        return [
            {"target": targets[i], "curves": {n: {m: c[i] for m, c in by_mode.items()} for n, by_mode in curves.items()},
             "metrics": {key: value[i] for key, value in metrics.items()}}
            for i in range(len(images))
        ]  # fmt: skip

    def finish(item: dict, payload: dict) -> dict:
        """One image's record: its target, curves, AUCs and decoder metrics (the index holds them; no files)."""
        curves = {n: {m: [round(float(v), 6) for v in c] for m, c in by_mode.items()} for n, by_mode in payload["curves"].items()}
        fields = {"target": int(payload["target"]), "curves": curves, "files": {}}
        for name, by_mode in payload["curves"].items():
            for mode, curve in by_mode.items():
                fields[f"{name}_{mode}_auc"] = round(float(auc(curve[None].double())[0]), 6)
        return fields | {key: round(float(value), 6) for key, value in payload["metrics"].items()}

    items = [ImageItem(i, p, output_name(p, root)) for i, p in enumerate(paths)]
    job = run_images(store, items, image_transform(image_size, model), step, finish, {"classifier": model, **({"decoder": visualizer.decoder} if visualizer else {})},
                     where, batch_size=args.batch_size, num_workers=args.num_workers, description="pv evaluate-explanations")  # fmt: skip
    if not job.main:
        return 0
    records, done = store.merge_readable(items)
    count = len(done)
    if not count:
        raise NoImagesError(f"None of the {len(paths)} files in {args.images} could be read as an image")
    metric_names = [key for key in ("ssim", "psnr", "latent_error", "latent_relative_error", "top1_agreement") if key in done[0]]
    store.write_index(records, ["key", "path", "sha256", "status", "target", *(f"{n}_{m}_auc" for n in methods for m in MODES), *metric_names, "error"])

    stacked = {name: {mode: torch.tensor([r["curves"][name][mode] for r in done], dtype=torch.float64) for mode in MODES} for name in methods}
    rows = [
        {"method": name, "deletion_auc": float(auc(c["deletion"]).mean()), "insertion_auc": float(auc(c["insertion"]).mean()), "images": count}
        for name, c in stacked.items()
    ]
    intro = (f"{count} images from {args.images}; target: the top class; scores: {activation}. "
             "Deletion AUC: lower is better; insertion AUC: higher is better.")  # fmt: skip
    if PV in methods:
        intro += f" pv: the mask PV shows ({args.pv_saliency} at the decoder's latent layer)."
    markdown = ["# Explanation metrics", "", intro, "", write_table(rows, out / "saliency_metrics.csv")]
    tables = [("Saliency", rows)]
    links = {"metrics.md": out / "metrics.md", "saliency_metrics.csv": out / "saliency_metrics.csv", "index.csv (per image)": out / "index.csv"}
    summary = {f"{r['method']}/{mode}_auc": r[f"{mode}_auc"] for r in rows for mode in MODES}
    if metric_names:
        decoder_row = {"decoder": Path(args.decoder).name, **{k: sum(r[k] for r in done) / count for k in metric_names}, "images": count}
        markdown += ["", "## Decoder", "", write_table([decoder_row], out / "decoder_metrics.csv")]
        tables.append(("Decoder", [decoder_row]))
        links["decoder_metrics.csv"] = out / "decoder_metrics.csv"
        summary |= {f"decoder/{k}": decoder_row[k] for k in metric_names}
    report = write_text(out / "metrics.md", "\n".join(markdown) + "\n")
    figure = curves_figure(stacked, out / "curves.png", activation)
    caption = "; ".join(f"{r['method']}: deletion {r['deletion_auc']:.3f}, insertion {r['insertion_auc']:.3f}" for r in rows)
    write_index(out, [Entry(figure, "deletion / insertion curves", caption, links)], "pv evaluate-explanations", intro, tables)
    print("\n".join(markdown[4:]))
    if args.logger == "wandb":
        from pv.lit.wandb_table import log_table

        columns = ["image", "target", *(f"{n}_{m}_auc" for n in methods for m in MODES), *metric_names]
        table = [[r["key"], r["target"], *(r[f"{n}_{m}_auc"] for n in methods for m in MODES), *(r[k] for k in metric_names)] for r in done]
        folder = log_table(out, project=args.wandb_project, name="pv-evaluate-explanations", columns=columns, rows=table, summary=summary, config=fingerprint)
        print(f"Logged {count} row(s) and the summary metrics to W&B ({folder})")
    print(f"Wrote {report}, the CSV tables, {figure.name}, index.csv/.json (per image) and index.html to {out}")
    return 0
