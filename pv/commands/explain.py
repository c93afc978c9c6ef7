"""`pv explain`: PV and saliency maps for a folder of images; per image a figure and the maps (.pt), and index.html."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from pv.atomic import write_bytes
from pv.commands.common import (
    CommandParser, UsageError, activation_of, add_classifier_arguments, add_encoder_mismatch_argument, add_folder_arguments, add_image_arguments,
    add_pv_saliency_argument,
    add_saliency_arguments, check_latent_size, classifier_from_arguments, classifier_name, display_name, input_size_of,
    make_saliency, make_visualizer, output_name, parse_list, prepare_output_dir, probabilities,
    saliency_names, saliency_options, saliency_title, training_data_label, unit_float, positive_int, add_job_arguments,
    devices_from_arguments, params_sha256, settings_of, add_precision_argument, job_device, resolve_precisions, MODEL,
)  # fmt: skip
from pv.data.batches import NoImagesError, image_paths, image_transform
from pv.data.results import ImageItem, ResultStore
from pv.lit.predict import is_main_process, run_images
from pv.explain.figures import ColorBar, Entry, Row, grid_figure, write_index
from pv.explain.overlay import heatmap_overlay
from pv.models.precision import autocast

PV_METHODS = ("pv", "cpv")


def parser() -> CommandParser:
    p = CommandParser(
        prog="pv explain",
        description="Perception Visualization and classic saliency maps for a folder of images. Writes per image a "
        "figure (input | saliency | reconstruction | PV per decoder, one row per top-k class, plus the baselines), "
        "the maps (.pt) and an index.html gallery. Output names keep each image's path under --images and its extension.",
    )
    add_classifier_arguments(p)
    p.add_argument(
        "--decoder", metavar="CKPT", action="append",
        help="pv decoder checkpoint (from pv fit) or a folder / Hub id USER/NAME from pv export, needed by pv and cpv; repeat it to show several decoders side by side, "
        "each titled with the data it was trained on",
    )  # fmt: skip
    add_encoder_mismatch_argument(p)
    add_folder_arguments(p)
    p.add_argument("--methods", default="pv,gradcam", help=f"comma-separated: pv, cpv (class-discriminative PV), {', '.join(saliency_names())}")
    add_pv_saliency_argument(p)
    p.add_argument("--topk", type=positive_int, default=3, help="explain the k most probable classes of each image")
    add_image_arguments(p)
    add_saliency_arguments(p)
    add_precision_argument(p)
    p.add_argument("--predictions", metavar="CSV", help="pv analyze's predictions.csv: adds each image's true classes and bucket to the index, the gallery filters and W&B")
    add_job_arguments(p)
    p.add_argument("--colormap", default="jet", help="matplotlib colormap of the heat maps")
    p.add_argument("--alpha", type=unit_float, default=0.5, help="heatmap opacity over the image")
    return p


def overlay_maps(images: torch.Tensor, maps: torch.Tensor, colormap: str, alpha: float) -> torch.Tensor:
    """Images (B, 3, H, W) and maps (B, k, 1, H, W) -> heatmaps over the images (B, k, 3, H, W)."""
    b, k = maps.shape[:2]
    blend = heatmap_overlay(images.repeat_interleave(k, 0), maps.flatten(0, 1), colormap, alpha)
    return blend.view(b, k, 3, *images.shape[-2:])


def decoder_labels(paths: list[str]) -> list[str]:
    """Each decoder's training data (from its checkpoint), made unique with the file name where two agree."""
    labels = [training_data_label(path) for path in paths]
    labels = [
        label if labels.count(label) == 1 else str(path) if label == Path(path).name else f"{label} ({Path(path).name})"
        for label, path in zip(labels, paths)
    ]
    return [f"{label} #{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def check_colormap(name: str) -> None:
    from matplotlib import colormaps

    if name not in colormaps:
        raise UsageError(f"--colormap {name!r} is not a matplotlib colormap (e.g. jet, viridis, inferno)")


SETTINGS = ("methods", "pv_saliency", "topk", "image_size", "activation", "layer", "ig_steps", "ig_baseline", "lime_samples",
            "lime_segments", "normalization", "blur", "tv", "seed", "colormap", "alpha")  # what shapes each image's results


def read_labels(path: str | None) -> dict[str, object]:
    """pv analyze's predictions.csv by resolved image path (true classes and bucket), or {} without --predictions."""
    if not path:
        return {}
    from pv.data.predictions import read_predictions

    rows, _ = read_predictions(path)
    return {str(Path(row.path).resolve()): row for row in rows if row.path}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    methods = parse_list(args.methods, [*PV_METHODS, *saliency_names()], "--methods")
    decoders = list(args.decoder or [])
    use_pv = any(m in PV_METHODS for m in methods)
    if use_pv and not decoders:
        raise UsageError("--methods pv/cpv need --decoder CKPT (a decoder trained with pv fit)")
    check_colormap(args.colormap)
    where = devices_from_arguments(args)
    out = prepare_output_dir(args.out)
    root = Path(args.images)
    paths = image_paths(root)
    truth = read_labels(args.predictions)
    cpu = torch.device("cpu")  # Lightning puts the models on each rank's device
    model = classifier_from_arguments(args, cpu)
    activation = activation_of(model, args.activation)
    image_size = input_size_of(model, args.image_size)
    options = saliency_options(args, activation)

    visualizers, labels = [], []
    if use_pv:
        labels = decoder_labels(decoders)
        for path in decoders:
            saliency = make_saliency(args.pv_saliency, model, options)
            visualizers.append(make_visualizer(
                model, path, cpu, saliency, classifier=classifier_name(args),
                allow_mismatch=args.allow_encoder_mismatch, normalization=args.normalization,
            ))  # fmt: skip
    baselines = [m for m in methods if m not in PV_METHODS and not (visualizers and m == args.pv_saliency)]
    saliencies = {name: make_saliency(name, model, options) for name in baselines}
    layers = {v.latent_name for v in visualizers} | {s.layer_name for s in saliencies.values() if getattr(s, "layer_name", None)}
    for layer in sorted(layers):
        check_latent_size(model, layer, image_size)
    # "pv" runs the decoder and --pv-saliency together: it takes that method's precision
    precisions = resolve_precisions(args.precision, job_device(where), list(baselines) + ([args.pv_saliency] if visualizers else []),
                                    announce=is_main_process())  # fmt: skip
    pv_precision = precisions[args.pv_saliency] if visualizers else precisions[MODEL]
    where.precision = "bf16" if "bf16" in precisions.values() else "32"
    store = ResultStore(out, "explain")
    fingerprint = {
        "classifier": {"name": classifier_name(args), "params_sha256": params_sha256(model)},
        "decoders": {label: params_sha256(v.decoder) for label, v in zip(labels, visualizers)},
        "settings": settings_of(args, SETTINGS) | {"image_size": image_size, "activation": activation, "precision": precisions},
    }
    store.check_manifest(fingerprint, write=is_main_process())

    columns = ["input"]
    if visualizers:
        columns.append(saliency_title(args.pv_saliency))
        for label in labels:
            suffix = f"\n({label})" if len(visualizers) > 1 else ""
            columns += [f"reconstruction{suffix}", f"PV{suffix}"] + ([f"class PV{suffix}"] if "cpv" in methods else [])
    columns += [saliency_title(name) for name in baselines]
    colorbar = ColorBar(args.colormap, f"saliency ({args.normalization}-normalised), shown over the image")
    note = f"row labels: class ({activation} score)"
    if visualizers and len(visualizers) == 1:
        note += f"; decoder trained on {labels[0]}"
    class_names = list(getattr(model, "class_names", [])) or None

    def step(images: torch.Tensor, items: list[dict]) -> list[dict]:
        """The model work for one batch (on the rank's device): scores, maps, reconstructions and figure panels."""
        with torch.no_grad(), autocast(precisions[MODEL], images.device):
            logits = model(images)  # (B, K)
        probs = probabilities(logits, activation)  # (B, K) fp32
        top_p, top_c = probs.topk(min(args.topk, probs.shape[1]), dim=1)  # (B, k)
        b, k = top_c.shape
        panels: dict[str, torch.Tensor] = {}  # column -> (B, k, 3, H, W)
        maps: dict[str, torch.Tensor] = {}  # method -> (B, k, 1, H, W)
        raws: dict[str, torch.Tensor] = {}  # method -> (B, k, c, h, w)
        reconstructions: dict[str, torch.Tensor] = {}  # decoder label -> (B, 3, H, W)
        for index, (visualizer, label) in enumerate(zip(visualizers, labels)):
            with autocast(pv_precision, images.device):
                result = visualizer(images, top_c, class_discriminative="cpv" in methods)
            result = {key: value.float() if value.is_floating_point() else value for key, value in result.items()}  # fp32 out
            suffix = f"\n({label})" if len(visualizers) > 1 else ""
            if index == 0:
                maps[args.pv_saliency], raws[args.pv_saliency] = result["saliency"], result["raw"]
                panels[columns[1]] = overlay_maps(images, result["saliency"], args.colormap, args.alpha)
            reconstructions[label] = result["reconstruction"]
            panels[f"reconstruction{suffix}"] = result["reconstruction"][:, None].expand(-1, k, -1, -1, -1)
            panels[f"PV{suffix}"] = result["pv"]
            if "cpv" in methods:
                panels[f"class PV{suffix}"] = result["class_pv"]
        for name, method in saliencies.items():
            with autocast(precisions[name], images.device):
                raw = method.attribute_multi(images, top_c).float()  # (B, k, c, h, w)
            maps[name] = method.to_maps(raw.flatten(0, 1), images.shape[-2:]).view(b, k, 1, *images.shape[-2:])
            raws[name] = raw
            panels[saliency_title(name)] = overlay_maps(images, maps[name], args.colormap, args.alpha)
        return [
            {
                "image": images[i], "classes": top_c[i], "probabilities": top_p[i],
                "maps": {m: v[i] for m, v in maps.items()}, "raw": {m: v[i] for m, v in raws.items()},
                "reconstructions": {label: r[i] for label, r in reconstructions.items()},
                "panels": {column: p[i] for column, p in panels.items()},
            }
            for i in range(b)
        ]  # fmt: skip

    def finish(item: dict, payload: dict) -> dict:
        """Write one image's figure and maps (atomically, on the rank that computed them); its record for the index."""
        path, name = Path(item["path"]), item["key"]
        title = display_name(str(path.relative_to(root)) if path.is_relative_to(root) else path.name)
        classes, top_p = payload["classes"].tolist(), payload["probabilities"]
        names = [class_names[c] if class_names else str(c) for c in classes]
        rows = [
            Row(f"{names[j]} ({activation} {top_p[j]:.2f})", [payload["image"]] + [payload["panels"][column][j] for column in columns[1:]])
            for j in range(len(classes))
        ]
        grid_figure(rows, columns, out / "figures" / f"{name}.png", title=title, colorbar=colorbar, note=note)
        record = {
            "image": str(path), "classes": payload["classes"], "class_names": names, "activation": activation,
            "probabilities": top_p, "maps": payload["maps"], "raw": payload["raw"],  # maps (k, 1, H, W) in [0, 1]; raw unnormalised
        }  # fmt: skip
        if payload["reconstructions"]:
            record["reconstruction"] = next(iter(payload["reconstructions"].values()))  # (3, H, W)
            record["reconstructions"] = payload["reconstructions"]
        buffer = io.BytesIO()
        torch.save(record, buffer)  # each tensor was cloned on its own: the file holds this image's tensors only
        write_bytes(out / "maps" / f"{name}.pt", buffer.getvalue())
        fields = {"classes": names, "probabilities": [round(float(p), 6) for p in top_p], "files": {"figure": f"figures/{name}.png", "maps": f"maps/{name}.pt"}}
        known = truth.get(str(path.resolve()))
        if known is not None:
            fields |= {"labels": list(known.labels), "bucket": known.bucket}
        return fields

    models = {"classifier": model} | {f"decoder{i}": v.decoder for i, v in enumerate(visualizers)}
    job = run_images(store, [ImageItem(i, p, output_name(p, root)) for i, p in enumerate(paths)], image_transform(image_size, model), step, finish,
                     models, where, batch_size=args.batch_size, num_workers=args.num_workers, description="pv explain")  # fmt: skip
    if not job.main:
        return 0
    records, done = store.merge_readable([ImageItem(i, p, output_name(p, root)) for i, p in enumerate(paths)])
    if not done:
        raise NoImagesError(f"None of the {len(paths)} files in {args.images} could be read as an image")
    csv_path, _ = store.write_index(records, INDEX_COLUMNS)
    entries = [
        Entry(
            out / r["files"]["figure"], display_name(str(Path(r["path"]).relative_to(root)) if Path(r["path"]).is_relative_to(root) else Path(r["path"]).name),
            f"{activation} scores: " + "; ".join(f"{n} {p:.2f}" for n, p in zip(r["classes"], r["probabilities"]))
            + (f"; true: {', '.join(r['labels'])} ({r['bucket']})" if "bucket" in r else ""),
            {"maps (.pt)": out / r["files"]["maps"]},
            {"class": list(r["classes"]), **({"bucket": [r["bucket"]], "true class": list(r["labels"])} if "bucket" in r else {})},
        )
        for r in done
    ]  # fmt: skip
    intro = f"{len(done)} images; columns: {', '.join(c.replace(chr(10), ' ') for c in columns)}; scores: {activation}"
    index = write_index(out, entries, "pv explain", intro)
    if args.logger == "wandb":
        from pv.lit.wandb_table import log_table

        table_columns, rows = explain_rows(out, done, image_transform(image_size, model), args.pv_saliency, args.colormap, args.alpha)
        summary = {"images": len(done), "unreadable": len(records) - len(done)}
        folder = log_table(out, project=args.wandb_project, name="pv-explain", columns=table_columns, rows=rows, summary=summary, config=fingerprint)
        print(f"Logged {len(done)} row(s) to W&B ({folder})")
    print(f"Wrote {len(done)} figure(s) to {out / 'figures'}, their maps to {out / 'maps'}, the index {csv_path} (+ .json) and {index}")
    return 0


INDEX_COLUMNS = ("key", "path", "sha256", "status", "classes", "probabilities", "labels", "bucket", "error")


def explain_rows(out: Path, records: list[dict], transform, method: str, colormap: str, alpha: float) -> tuple[list[str], list[list]]:
    """W&B table columns and one row per image: input, saliency over it, reconstruction and PV (uint8 HWC, top class),
    true and predicted classes, bucket, probabilities."""
    from pv.data.images import load_image
    from pv.explain.combine import perception_visualization
    from pv.explain.figures import to_uint8

    columns = ["image", "input", saliency_title(method) if method in saliency_names() else method, "reconstruction", "PV",
               "true classes", "predicted classes", "bucket", "probabilities"]  # fmt: skip
    rows = []
    for record in records:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small images are upscaled; said once per image when explained
            image = transform(load_image(record["path"]), record["path"])  # (3, S, S)
        saved = torch.load(out / record["files"]["maps"], weights_only=True)
        mask = saved["maps"].get(method, next(iter(saved["maps"].values()), None))  # (k, 1, S, S)
        overlay = heatmap_overlay(image[None], mask[:1], colormap, alpha)[0] if mask is not None else None
        reconstruction = saved.get("reconstruction")  # (3, S, S)
        pv = perception_visualization(reconstruction[None], mask[:1])[0] if reconstruction is not None and mask is not None else None
        rows.append([
            record["key"], to_uint8(image), None if overlay is None else to_uint8(overlay),
            None if reconstruction is None else to_uint8(reconstruction), None if pv is None else to_uint8(pv),
            ";".join(record.get("labels", [])), ";".join(record["classes"]), record.get("bucket", ""),
            ";".join(f"{p:.4f}" for p in record["probabilities"]),
        ])  # fmt: skip
    return columns, rows
