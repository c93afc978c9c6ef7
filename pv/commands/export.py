"""`pv export`: a decoder or classifier checkpoint as a Hugging Face folder (model.safetensors, config.json and
a model card README.md with a figure of held-out reconstructions), optionally pushed to the Hub."""
from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from pv.commands.common import (
    CommandParser, OutputError, UsageError, add_classifier_arguments, classifier_from_arguments, classifier_name, display_name,
    input_size_of, make_visualizer, positive_int, resolve_device, user_errors,
)  # fmt: skip
from pv.errors import PVError

FIGURE = "reconstructions.png"
FIGURE_IMAGES = 6  # held-out images shown in the card's figure


def parser() -> CommandParser:
    p = CommandParser(
        prog="pv export",
        description="Write a pv decoder (--decoder) or classifier (--classifier alone) as a Hugging Face folder: "
        "model.safetensors, config.json (constructor arguments, layer, input size, normalisation, encoder fingerprint) "
        "and README.md, a model card from the run (the classifier it explains, training data, loss weights, epochs, and "
        "with --images the held-out SSIM, PSNR, M(y)=M(x) agreement and a figure). Every command's --decoder / "
        "--classifier reads the folder, or its Hub id after --push.",
    )
    p.add_argument("--decoder", metavar="CKPT", help="pv decoder checkpoint (from pv fit) to export")
    add_classifier_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write: new or empty (nothing is overwritten)")
    p.add_argument("--images", metavar="DIR", help="held-out images (not trained on) for the decoder card's SSIM, PSNR, agreement and figure")
    p.add_argument("--limit", type=positive_int, default=64, help="use at most this many of --images (sorted by path)")
    p.add_argument("--image-size", type=positive_int, help="image side for --images; default: the size the decoder was trained at (its run's config.yaml), else the classifier's")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per model batch")
    p.add_argument("--push", metavar="USER/NAME", help="then upload the folder to this Hugging Face Hub model repository (token: $HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="with --push: create the repository private")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.decoder and not args.classifier:
        raise UsageError("Give what to export: --decoder CKPT (a decoder from pv fit) or --classifier CKPT (a classifier from pv fit)")
    if not args.decoder and (args.arch or args.images):
        raise UsageError(f"{'--arch' if args.arch else '--images'} is for a decoder export (--decoder CKPT): it names the classifier the decoder explains / its held-out images")
    token = push_token(args.push) if args.push else None
    out = check_new_folder(Path(args.out))
    name = args.push or str(out)
    with new_folder(out) as folder:
        if args.decoder:
            export_decoder(args, folder, name)
        else:
            export_classifier(args, folder, name)
    print(f"Wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    if args.push:
        from pv.models.hub import push_folder

        try:
            url = push_folder(out, args.push, token=token, private=args.private)
        except PVError:
            raise
        except Exception as err:  # network, permission, quota: the Hub's own words, in one line
            raise PushError(f"--push {args.push}: the upload failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                            f"{out} is complete: retry, or upload it with `hf upload {args.push} {out}`") from None  # fmt: skip
        print(f"Pushed {out} to https://huggingface.co/{args.push} ({url})")
    return 0


class PushError(PVError):
    """An upload to the Hugging Face Hub that cannot start or did not finish."""


def push_token(repo: str) -> str:
    """The Hub token for --push (HF_TOKEN, else huggingface_hub's saved login), checked before any work."""
    from pv.models.hub import HUB_ID

    if not HUB_ID.fullmatch(repo):
        raise UsageError(f"--push {repo!r} is not a Hugging Face Hub repository id: give USER/NAME (or ORG/NAME)")
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PushError("--push needs a Hugging Face token with write access: set HF_TOKEN (https://huggingface.co/settings/tokens)")
    return token


def check_new_folder(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"--out {out} already exists and is not an empty folder: pv export writes a new folder (nothing is overwritten)")
    return out


class new_folder:
    """Write into a temporary folder beside `out`, renamed to `out` when complete (a failed export leaves nothing)."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        except OSError as err:
            raise OutputError(f"--out {self.out} cannot be written: {err.strerror or err}") from None
        return self.tmp

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        umask = os.umask(0)
        os.umask(umask)
        for path in self.tmp.iterdir():  # temporary files are private (0600): give the folder the user's usual modes
            path.chmod(0o666 & ~umask)
        self.tmp.chmod(0o777 & ~umask)
        if self.out.is_dir():
            self.out.rmdir()  # empty (checked before any work)
        os.replace(self.tmp, self.out)


# --- what the run recorded ---


def run_config(checkpoint_path: str | Path) -> dict:
    """The run's config.yaml (pv fit writes it in the run folder, above checkpoints/), or {} when absent."""
    import yaml

    path = Path(checkpoint_path)
    for folder in (path.parent, path.parent.parent):
        candidate = folder / "config.yaml"
        if candidate.is_file():
            try:
                config = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError):
                return {}
            return config if isinstance(config, dict) else {}
    return {}


def find_key(config, key: str):
    """The first value of `key` in a nested config (depth first), or None."""
    if isinstance(config, dict):
        if key in config:
            return config[key]
        for value in config.values():
            found = find_key(value, key)
            if found is not None:
                return found
    return None


def loss_record(run: dict) -> dict | None:
    """{"class", "weights", "ssim_reduction"} of the run's loss (PerceptionLoss's defaults when the config leaves it out), or None."""
    model = (run.get("model") or {}).get("init_args") if isinstance(run.get("model"), dict) else None
    if not isinstance(model, dict):
        return None
    from pv.losses import PerceptionLoss

    loss = model.get("loss")
    if loss is None:  # DecoderModule's default
        defaults = inspect.signature(PerceptionLoss).parameters
        return {"class": "pv.losses.PerceptionLoss", "weights": list(defaults["weights"].default), "ssim_reduction": defaults["ssim_reduction"].default}
    init = loss.get("init_args") or {} if isinstance(loss, dict) else {}
    weights = init.get("weights")
    if weights is None:
        weights = list(inspect.signature(PerceptionLoss).parameters["weights"].default)
    return {"class": loss.get("class_path"), "weights": [float(w) for w in weights], "ssim_reduction": init.get("ssim_reduction", "sum")}


def epochs_of(checkpoint: dict) -> int | None:
    """Training epochs completed when the checkpoint was written (Lightning's fit-loop progress)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint["epoch"]) + 1 if isinstance(checkpoint.get("epoch"), int) else None


def normalization_of(model: nn.Module) -> dict | None:
    normalize = getattr(model, "normalize", None)
    if normalize is None or not hasattr(normalize, "mean"):
        return None
    return {"mean": [round(float(v), 6) for v in normalize.mean.flatten()], "std": [round(float(v), 6) for v in normalize.std.flatten()]}


# --- the decoder ---


def explained_classifier(args, checkpoint: dict, encoder_config: dict) -> nn.Module:
    """The classifier M the decoder explains: the flags' when given, else the one its checkpoint records
    (a pv classifier checkpoint, zoo weights, or a random initialisation saved with the decoder's run)."""
    cpu = torch.device("cpu")
    if args.classifier or args.arch:
        return classifier_from_arguments(args, cpu)
    from pv.models.loading import load_classifier

    hint = "; give the classifier it explains with --classifier CKPT (or --arch NAME --weights ENUM)"
    try:
        if encoder_config.get("checkpoint"):
            return load_classifier(checkpoint=encoder_config["checkpoint"]).eval()
        if encoder_config.get("weights"):
            return load_classifier(arch=encoder_config["arch"], weights=encoder_config["weights"]).eval()
    except (PVError, ValueError, OSError) as err:
        raise UsageError(f"{args.decoder}: its classifier cannot be loaded ({str(err).splitlines()[0]}){hint}") from None
    from pv.models import FrozenEncoder

    encoder = FrozenEncoder(encoder_config["arch"], encoder_config.get("layer"), weights=None)  # random init: the run saved its weights
    state = {k.removeprefix("encoder."): v for k, v in checkpoint["state_dict"].items() if k.startswith("encoder.")}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    model = encoder.as_classifier() if not missing and not unexpected else None
    if model is None:
        raise UsageError(f"{args.decoder}: its classifier was a random initialisation whose head the checkpoint does not hold{hint}")
    return model.eval()


def held_out(visualizer, paths: list[Path], image_size: int, batch_size: int, training: dict | None, device: torch.device) -> tuple[dict, list]:
    """SSIM, PSNR and top-class agreement M(y) = M(x) over held-out images (refused when one was trained on),
    and the first FIGURE_IMAGES (name, image, reconstruction) for the figure."""
    from tqdm.auto import tqdm

    from pv.data.batches import load_batches
    from pv.explain.evaluate import decoder_metrics

    trained = {(Path(training["root"]) / name).resolve() for name in training.get("files") or []} if training and training.get("root") else set()
    seen = [p for p in paths if p.resolve() in trained]
    if seen:
        raise UsageError(f"--images: {len(seen)} of the images were trained on (e.g. {seen[0]}): held-out numbers need held-out images")
    values: dict[str, list[torch.Tensor]] = {"ssim": [], "psnr": [], "top1_agreement": []}
    shown: list = []
    with tqdm(total=len(paths), desc="pv export: held-out images", unit="img", dynamic_ncols=True) as bar:
        for batch_paths, images in load_batches(paths, image_size, batch_size):
            images = images.to(device)  # (B, 3, S, S)
            metrics = decoder_metrics(visualizer, images)
            for key in values:
                values[key].append(metrics[key].float().cpu())
            if len(shown) < FIGURE_IMAGES:
                reconstructions = visualizer.reconstruct(images)
                shown += [(p, images[i].cpu(), reconstructions[i].cpu()) for i, p in enumerate(batch_paths)][: FIGURE_IMAGES - len(shown)]
            bar.update(len(batch_paths))
    if not values["ssim"]:
        from pv.data.batches import NoImagesError

        raise NoImagesError(f"None of the {len(paths)} files in --images could be read as an image")
    stacked = {key: torch.cat(parts) for key, parts in values.items()}
    count = len(stacked["ssim"])
    numbers = {
        "images": count, "image_size": image_size,
        "ssim": round(float(stacked["ssim"].mean()), 4), "psnr": round(float(stacked["psnr"].mean()), 2),
        "agreement": round(float(stacked["top1_agreement"].mean()), 4), "agreeing": int(stacked["top1_agreement"].sum()),
    }  # fmt: skip
    return numbers, shown


def held_out_figure(shown: list, root: Path, path: Path, numbers: dict) -> Path:
    from pv.explain.figures import Row, grid_figure

    names = [display_name(str(p.relative_to(root)) if p.is_relative_to(root) else p.name) for p, _, _ in shown]
    rows = [Row("held-out image", [image for _, image, _ in shown]), Row("reconstruction", [rec for _, _, rec in shown])]
    title = f"Held-out images and their reconstructions (mean over {numbers['images']} images: SSIM {numbers['ssim']:.3f}, PSNR {numbers['psnr']:.2f} dB)"
    return grid_figure(rows, names, path, title=title, panel_inches=1.6)


def export_decoder(args, folder: Path, name: str) -> None:
    from pv.models import load_checkpoint, load_decoder
    from pv.models.checkpoint import training_data
    from pv.models.hub import card_metadata, weights_sha256

    with user_errors(f"--decoder {args.decoder}: "):
        checkpoint = load_checkpoint(args.decoder)
        decoder, encoder_config = load_decoder(args.decoder)
        record = training_data(args.decoder)
    fingerprint = encoder_config.pop("fingerprint", None)
    if not fingerprint:
        raise UsageError(f"--decoder {args.decoder} records no encoder fingerprint (written by an older pv): a shared decoder must name the classifier it explains; retrain it with pv fit")
    run = run_config(args.decoder)
    trained_size = find_key(run.get("data"), "image_size")
    device = resolve_device(args.device)
    model = explained_classifier(args, checkpoint, encoder_config).to(device)
    description = classifier_name(args) if (args.classifier or args.arch) else "the classifier its checkpoint records"
    visualizer = make_visualizer(model, args.decoder, device, classifier=description)  # refuses another classifier's decoder
    numbers, figure = None, None
    if args.images:
        from pv.data.batches import image_paths

        paths = image_paths(args.images)[: args.limit]
        size = args.image_size or (int(trained_size) if trained_size else input_size_of(model))
        numbers, shown = held_out(visualizer, paths, size, args.batch_size, record, device)
        figure = held_out_figure(shown, Path(args.images), folder / FIGURE, numbers).name
        numbers["source"] = Path(args.images).name
    pv = {
        "weights_sha256": weights_sha256(decoder.state_dict()),
        "encoder": encoder_config, "encoder_fingerprint": fingerprint,
        "input_size": int(trained_size) if trained_size else None, "normalization": normalization_of(model),
        "latent": {"layer": visualizer.latent_name.removeprefix("trunk."), "channels": decoder.in_channels},
        "training": {"data": record, "loss": loss_record(run), "epochs": epochs_of(checkpoint), "steps": checkpoint.get("global_step")},
        "held_out": numbers, "exported_from": Path(args.decoder).name,
    }  # fmt: skip
    config = decoder.hub_config(pv)
    card = decoder_card(config, name, figure, sum(p.numel() for p in decoder.parameters()))
    decoder.save_pretrained(folder, config=config, model_card_kwargs=card | {"meta": card_metadata(config["pv"])})


def weights_text(encoder: dict) -> str:
    if encoder.get("checkpoint"):
        return f"pv classifier checkpoint `{Path(str(encoder['checkpoint'])).name}`"
    if encoder.get("weights"):
        return f"`{encoder['weights']}`"
    return "random initialisation (its weights were saved with the decoder's run)"


def training_data_text(record: dict | None) -> str:
    if not record:
        return "Not recorded: the checkpoint was written before pv recorded its training data."
    return (
        "| name | split | images | sha256 of the file list |\n|---|---|---|---|\n"
        f"| {record.get('dataset')} | {record.get('split')} | {record.get('n_images')} | `{record.get('files_sha256')}` |\n\n"
        "The file list itself is in config.json (`pv.training.data.files`), so an image can be checked against it."
    )


def training_rows(training: dict) -> list[tuple[str, str]]:
    epochs, steps = training.get("epochs"), training.get("steps")
    rows = [("epochs", "not recorded" if epochs is None else f"{epochs}" + (f" ({steps} optimisation steps)" if steps is not None else ""))]
    loss = training.get("loss")
    if "loss" in training:
        rows.insert(0, ("loss weights (MSE, SSIM, DSIM)", "not recorded (no config.yaml beside the checkpoint)" if not loss
                        else ", ".join(f"{w:g}" for w in loss["weights"]) + f" (`{loss['class']}`, SSIM {loss['ssim_reduction']} over channels)"))  # fmt: skip
    return rows


def decoder_card(config: dict, name: str, figure: str | None, parameters: int) -> dict:
    """The values of the decoder card template (pv/models/cards/decoder.md)."""
    pv = config["pv"]
    encoder, fingerprint, latent = pv["encoder"], pv["encoder_fingerprint"], pv["latent"]
    normalization = pv["normalization"] or {}
    size = f"{pv['input_size']} px" if pv["input_size"] else "its training size not recorded"
    classifier = [
        ("architecture", f"`{encoder.get('arch')}`"), ("weights", weights_text(encoder)),
        ("layer (the latent)", f"`{latent['layer']}`, {latent['channels']} channels"),
        ("encoder fingerprint", f"`{fingerprint.get('params_sha256')}`"),
        ("input", f"{size}, images in [0, 1] normalised with mean {normalization.get('mean')} and std {normalization.get('std')}"),
    ]  # fmt: skip
    arguments = {k: v for k, v in config.items() if k != "pv"}
    training = training_rows(pv["training"]) + [("decoder", f"{parameters:,} parameters; " + ", ".join(f"{k}={v}" for k, v in arguments.items()))]
    numbers = pv["held_out"]
    if numbers:
        held = (
            f"Measured by `pv export` on {numbers['images']} held-out images (`{numbers['source']}`, {numbers['image_size']} px), "
            "none of them in the training file list:\n\n"
            "| SSIM | PSNR (dB) | M(y) = M(x) (top class) |\n|---|---|---|\n"
            f"| {numbers['ssim']:.4f} | {numbers['psnr']:.2f} | {100 * numbers['agreement']:.1f}% ({numbers['agreeing']} of {numbers['images']}) |\n\n"
            f"![Held-out images (top row) and their reconstructions by this decoder (bottom row)]({figure})"
        )
    else:
        held = "Not measured: export with `--images DIR` (images it was not trained on) to add SSIM, PSNR, agreement and a figure."
    return {
        "title": f"PV decoder for {encoder.get('arch')} {latent['layer']}", "layer": latent["layer"], "classifier": classifier,
        "training_data": training_data_text(pv["training"]["data"]), "training": training, "held_out": held, "name": name, "figure": figure,
    }  # fmt: skip


# --- the classifier ---


def export_classifier(args, folder: Path, name: str) -> None:
    from pv.models import Classifier, load_checkpoint
    from pv.models.checkpoint import training_data
    from pv.models.fingerprint import fingerprint_of_classifier
    from pv.models.hub import card_metadata, weights_sha256

    with user_errors(f"--classifier {args.classifier}: "):
        checkpoint = load_checkpoint(args.classifier)
        model = Classifier.from_checkpoint(args.classifier).eval()
        record = training_data(args.classifier)
    pv = {
        "weights_sha256": weights_sha256(model.state_dict()),
        "feature_layer": model.feature_layer, "encoder_fingerprint": fingerprint_of_classifier(model, model.feature_layer),
        "input_size": model.input_size, "normalization": normalization_of(model),
        "training": {"data": record, "epochs": epochs_of(checkpoint), "steps": checkpoint.get("global_step")},
        "exported_from": Path(args.classifier).name,
    }  # fmt: skip
    config = model.hub_config(pv)
    config["weights"] = None  # the folder holds the weights
    names = list(model.class_names)
    classes = f"Classes ({len(names)}): " + ", ".join(f"`{n}`" for n in names[:50]) + (f" ... ({len(names) - 50} more, in config.json)" if len(names) > 50 else "")
    normalization = pv["normalization"] or {}
    rows = [
        ("architecture", f"`{config.get('arch')}`"), ("classes", str(model.num_classes)), ("scores", f"{model.activation} of the logits"),
        ("input", f"{model.input_size} px, normalised with mean {normalization.get('mean')} and std {normalization.get('std')}"),
        ("last feature layer", f"`{model.feature_layer}`"),
        (f"encoder fingerprint at `{model.feature_layer}`", f"`{pv['encoder_fingerprint']['params_sha256']}` (what a decoder of this layer records)"),
    ]  # fmt: skip
    card = {
        "title": f"pv classifier: {config.get('arch')}, {model.num_classes} classes", "model": rows, "classes": classes,
        "training_data": training_data_text(record), "training": training_rows(pv["training"]), "name": name,
    }  # fmt: skip
    model.save_pretrained(folder, config=config, model_card_kwargs=card | {"meta": card_metadata(config["pv"])})
