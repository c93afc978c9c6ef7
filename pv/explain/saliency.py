"""The shared saliency interface.

`build_saliency(name, model, **options)` builds a method; `method(images, targets)` gives maps
(B, 1, H, W) in [0, 1] at the input size, and `method.attribute(images, targets)` the raw,
unnormalised attribution. Each method overrides `attribute` (and, where its raw output is not one
non-negative map, `reduce`); this base class does the target checks, the layer lookup, upsampling,
denoising and normalisation. A method describes itself: its `title` for figures, and `options()`,
the keyword-only options of its constructor (read from the signatures), so commands need no table.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from pv.explain.cam import NORMALIZATIONS, normalize_maps, upsample_maps
from pv.explain.postprocess import gaussian_blur, tv_denoise
from pv.models.classifier import Classifier, layer_names, trunk_of
from pv.models.zoo import last_conv_layer

TargetsLike = torch.Tensor | int | Sequence[int]


class _StopForward(Exception):
    """Raised by a `LayerRecorder(stop=True)` hook to skip the rest of the network."""


class LayerRecorder:
    """Context manager that records the output of `layer` on each forward pass; the hook goes on exit.

    `clone=True` hands the rest of the network a copy, so in-place ops downstream (ReLU(inplace),
    `out += identity`) cannot overwrite the recorded tensor that gradients are taken against.
    `stop=True` aborts the forward pass right after `layer` (use `run` to call the model).
    """

    def __init__(self, layer: nn.Module, clone: bool = False, stop: bool = False):
        self.layer, self.clone, self.stop = layer, clone, stop
        self.output: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module: nn.Module, inputs, output):
        self.output = output
        if self.stop:
            raise _StopForward
        return output.clone() if self.clone else None

    def __enter__(self) -> "LayerRecorder":
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def run(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Forward `images` (up to `layer` when stop=True) and return the recorded output."""
        try:
            model(images)
        except _StopForward:
            pass
        if self.output is None:
            raise ValueError(f"The layer {type(self.layer).__name__} was not called by the model's forward pass")
        return self.output


def resolve_layer(model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """Find a sub-module by name, also relative to a Classifier's trunk ("layer4" -> "trunk.layer4")."""
    for name in (layer, f"trunk.{layer}", f"net.{layer}", f"body.{layer}"):
        try:
            return name, model.get_submodule(name)
        except AttributeError:
            continue
    raise ValueError(f"Layer {layer!r} not found in {type(model).__name__}; valid layer names are: {', '.join(layer_names(trunk_of(model)))}")


def default_layer(model: nn.Module) -> str:
    """The last convolutional block: `trunk.<feature_layer>` for a pv Classifier, e.g. "layer4" for a
    torchvision ResNet, "net.features" for a wrapped VGG / MobileNet / DenseNet."""
    if isinstance(model, Classifier):
        return f"trunk.{model.feature_layer}"
    if isinstance(getattr(model, "default_layer", None), str):  # a loaded zoo model says its own (pv.models.zoo.model_spec)
        return model.default_layer
    return last_conv_layer(model)


def num_classes_of(model: nn.Module) -> int | None:
    """The model's class count when it declares one (pv Classifier, the CLI's wrappers)."""
    count = getattr(model, "num_classes", None)
    return int(count) if isinstance(count, int) else None


def as_targets(targets: TargetsLike, batch: int, num_classes: int | None, device: torch.device) -> torch.Tensor:
    """One class index per image as a LongTensor (B,); an int is used for every image.

    Raises ValueError for a wrong length or an index outside [0, num_classes).
    """
    targets = torch.as_tensor(targets, dtype=torch.long, device=device)
    if targets.dim() == 0:
        targets = targets.expand(batch)
    if targets.shape != (batch,):
        raise ValueError(f"targets must hold one class index per image: expected shape ({batch},), got {tuple(targets.shape)}")
    if num_classes is not None and len(targets):
        bad = ((targets < 0) | (targets >= num_classes)).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"target index {int(targets[i])} (image {i}) is out of range for a model with {num_classes} classes")
    return targets


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (B, C, H, W), got {shape}")


class Saliency:
    """Base class: `method(images, targets) -> (B, 1, H, W)` in [0, 1], per image normalised.

    Options shared by every method: `blur_sigma` (Gaussian blur of the map, in input pixels) and
    `tv_weight` (total-variation denoising) post-process the map; `normalization` scales it to
    [0, 1]: "max" (divide by the maximum, the authors' Grad-CAM) or "minmax" (`normalize_maps`).
    The model takes images in [0, 1] and returns logits (B, K); it should be in eval mode.
    A subclass sets `title` (its name in figures) and takes its own options keyword-only.
    """

    title: str = "saliency"

    def __init__(self, model: nn.Module, *, blur_sigma: float = 0.0, tv_weight: float = 0.0, normalization: str = "max"):
        if blur_sigma < 0 or tv_weight < 0:
            raise ValueError(f"blur_sigma and tv_weight must be >= 0, got {blur_sigma} and {tv_weight}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        self.model = model
        self.blur_sigma = blur_sigma
        self.tv_weight = tv_weight
        self.normalization = normalization
        self._num_classes = num_classes_of(model)

    @classmethod
    def options(cls) -> dict[str, inspect.Parameter]:
        """The keyword-only options the constructor accepts, own and inherited (through `**options`)."""
        found: dict[str, inspect.Parameter] = {}
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            parameters = inspect.signature(init).parameters.values()
            for parameter in parameters:
                if parameter.kind is parameter.KEYWORD_ONLY:
                    found.setdefault(parameter.name, parameter)
            if not any(p.kind is p.VAR_KEYWORD for p in parameters):
                break  # this constructor passes nothing further up
        return found

    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        """The raw attribution for each image's target class; its shape depends on the method."""
        raise NotImplementedError

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        """Raw attribution (B, C, h, w) -> one non-negative map (B, 1, h, w); default: sum of |.| over C."""
        return attribution.abs().sum(dim=1, keepdim=True)

    def __call__(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        check_images(images)
        return self.to_maps(self.attribute(images, targets), images.shape[-2:])

    def to_maps(self, attribution: torch.Tensor, size: tuple[int, int], normalization: str | None = None) -> torch.Tensor:
        """Raw attribution (N, C, h, w) -> maps (N, 1, H, W) in [0, 1]: reduce, upsample, post-process,
        normalise (`normalization`, default: the method's own)."""
        with torch.autocast(attribution.device.type, enabled=False):  # fp32 maps even inside a caller's bf16 autocast
            maps = self.reduce(attribution.float())  # (N, 1, h, w)
            if maps.shape[-2:] != tuple(size):
                maps = upsample_maps(maps, tuple(size))  # (N, 1, H, W)
            return self.postprocess(maps, normalization)

    def attribute_multi(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Raw attributions for K classes per image: targets (B, K) -> (B, K, C, h, w).

        The default repeats each image K times; methods with a cheaper way override it.
        """
        check_images(images)
        b, k = targets.shape
        raw = self.attribute(images.repeat_interleave(k, dim=0), targets.reshape(-1))  # (B*K, C, h, w)
        return raw.view(b, k, *raw.shape[1:])

    def postprocess(self, maps: torch.Tensor, normalization: str | None = None) -> torch.Tensor:
        """Optional blur / TV denoising, then per-image normalisation to [0, 1] (`normalize_maps`)."""
        mode = normalization or self.normalization
        scale = maps.flatten(1).abs().amax(1).clamp_min(torch.finfo(maps.dtype).tiny)  # (N,) tiny attributions
        maps = maps / scale.view(-1, 1, 1, 1)  # must not fall under normalize_maps' absolute eps
        if self.blur_sigma > 0:
            maps = gaussian_blur(maps, self.blur_sigma)
        if self.tv_weight > 0:
            maps = tv_denoise(normalize_maps(maps, mode), self.tv_weight)
        return normalize_maps(maps, mode)

    def targets(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        """Validated targets (B,) on the images' device; learns the class count with one forward if needed."""
        if self._num_classes is None:
            with torch.no_grad():
                self._num_classes = int(self.model(images[:1]).shape[1])
        return as_targets(targets, len(images), self._num_classes, images.device)


class LayerSaliency(Saliency):
    """A method that reads one layer's activations; `layer` defaults to `default_layer(model)`.
    Any method with a `layer` option receives the command line's `--layer` (`build_saliency`)."""

    def __init__(self, model: nn.Module, *, layer: str | None = None, **options):
        super().__init__(model, **options)
        self.layer_name, self.layer = resolve_layer(model, layer or default_layer(model))

    def activations_and_gradients(self, images: torch.Tensor, targets: TargetsLike) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's activations A (B, C, h, w) and d logit_target / dA, from one forward and one backward."""
        images = images.detach().requires_grad_(True)  # so A has a graph even with frozen weights
        with torch.enable_grad():  # also under a caller's no_grad (e.g. Lightning's predict loop)
            with LayerRecorder(self.layer, clone=True) as recorder:
                logits = self.model(images)  # (B, K)
                activations = recorder.output
            if activations is None or activations.dim() != 4:
                got = "nothing" if activations is None else f"shape {tuple(activations.shape)}"
                raise ValueError(f"Layer {self.layer_name!r} must output a feature map (B, C, h, w); got {got}")
            if self._num_classes is None:
                self._num_classes = logits.shape[1]
            targets = as_targets(targets, len(images), self._num_classes, images.device)
            score = logits.gather(1, targets[:, None]).sum()  # images are independent in eval mode
            (gradients,) = torch.autograd.grad(score, activations)
        return activations.detach(), gradients.detach()
