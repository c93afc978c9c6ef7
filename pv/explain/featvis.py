"""Feature visualization: gradient ascent on the input to maximise a layer, a channel or a class logit.

Multi-scale ("octaves"): optimise a small image, upscale it by `growth`, repeat; each step is a
gradient step normalised by the gradient's mean magnitude, with a Gaussian blur (a cheap image
prior) and clamping to [0, 1]. From seeded noise (the image is blurred after each step), or from a
given image ("dream" mode: the step is blurred, not the photo; each octave keeps the image's own
detail at that scale and adds what the ascent painted).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pv.explain.postprocess import gaussian_blur
from pv.explain.saliency import LayerRecorder, as_targets, default_layer, resolve_layer


def _per_image(value: int | torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
    if value is None:
        return None
    value = torch.as_tensor(value, dtype=torch.long, device=device)
    return value.expand(batch) if value.dim() == 0 else value


class Objective:
    """images (B, 3, H, W) -> scores (B,) to maximise; use inside `with objective:` (it holds a hook).

    `class_index`: the logit of that class (one per image allowed). Otherwise the mean activation
    of `layer` (default: the last conv block), or of its channel `channel` (one per image allowed).
    """

    def __init__(self, model: nn.Module, layer: str | None = None, channel: int | torch.Tensor | None = None, class_index: int | torch.Tensor | None = None):
        if class_index is not None and (layer is not None or channel is not None):
            raise ValueError("Choose one objective: a class logit (class_index) or a layer / channel, not both")
        self.model, self.channel, self.class_index = model, channel, class_index
        self.layer_name, self.layer = (None, None) if class_index is not None else resolve_layer(model, layer or default_layer(model))
        self._recorder = LayerRecorder(self.layer, stop=True) if self.layer is not None else None

    def __enter__(self) -> "Objective":
        if self._recorder is not None:
            self._recorder.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._recorder is not None:
            self._recorder.__exit__(*exc)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b = len(images)
        if self._recorder is None:
            logits = self.model(images)  # (B, K)
            targets = as_targets(_per_image(self.class_index, b, images.device), b, logits.shape[1], images.device)
            return logits.gather(1, targets[:, None]).squeeze(1)
        self._recorder.output = None
        activations = self._recorder.run(self.model, images)  # (B, C, h, w): the model stops at the layer
        if self.channel is None:
            return activations.flatten(1).mean(1)
        channels = _per_image(self.channel, b, images.device)
        if channels.shape != (b,) or bool(((channels < 0) | (channels >= activations.shape[1])).any()):
            raise ValueError(f"channel {channels.tolist()} out of range: layer {self.layer_name!r} has {activations.shape[1]} channels")
        return activations[torch.arange(b, device=images.device), channels].flatten(1).mean(1)  # (B,)


def octave_sizes(size: tuple[int, int], octaves: int, growth: float, min_size: int = 16) -> list[tuple[int, int]]:
    """Image sizes from small to `size`, each `growth` times the previous one (at least min_size px)."""
    return [
        tuple(max(min_size, round(s / growth ** (octaves - 1 - i))) for s in size)
        for i in range(octaves)
    ]


def feature_visualization(
    model: nn.Module,
    *,
    layer: str | None = None,
    channel: int | torch.Tensor | None = None,
    class_index: int | torch.Tensor | None = None,
    image: torch.Tensor | None = None,
    batch_size: int | None = None,
    size: int | tuple[int, int] = 128,
    octaves: int = 4,
    growth: float = 1.4,
    steps: int = 20,
    lr: float = 0.05,
    blur_sigma: float = 0.5,
    jitter: int = 4,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] that maximise the objective (see `Objective`).

    B is `len(image)` in dream mode, else the number of channels / classes asked for (a tensor),
    else `batch_size` (default 1). `size` is ignored in dream mode (the image keeps its size).
    """
    if octaves < 1 or steps < 0 or growth < 1:
        raise ValueError(f"need octaves >= 1, steps >= 0 and growth >= 1; got {octaves}, {steps}, {growth}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    counts = [len(v) for v in (channel, class_index) if isinstance(v, torch.Tensor) and v.dim() == 1]
    if image is not None:
        if image.dim() == 3:
            image = image.unsqueeze(0)
        batch = len(image)
        image = image.to(device, torch.float32)
        size = tuple(image.shape[-2:])
    else:
        batch = batch_size or (counts[0] if counts else 1)
        size = (size, size) if isinstance(size, int) else tuple(size)
    if any(c != batch for c in counts):
        raise ValueError(f"{counts[0]} channels / classes given for a batch of {batch} images")
    sizes = octave_sizes(size, octaves, growth)
    resize = lambda x, s: F.interpolate(x, size=s, mode="bilinear", align_corners=False)  # noqa: E731

    if image is None:
        x = (0.5 + 0.1 * torch.randn(batch, 3, *sizes[0], generator=generator)).clamp(0, 1).to(device)
        bases = None
    else:
        bases = [resize(image, s) for s in sizes]
        x = bases[0].clone()
    objective = Objective(model, layer, channel, class_index)  # checks the layer name before any work
    bar = tqdm(total=octaves * steps, desc="featvis", disable=not progress)
    with objective:
        for octave, s in enumerate(sizes):
            if octave:
                x = resize(x, s) if bases is None else bases[octave] + resize(x - bases[octave - 1], s)
            for _ in range(steps):
                dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else (0, 0))
                x = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    score = objective(torch.roll(x, shifts=(dy, dx), dims=(2, 3))).sum()
                    (gradient,) = torch.autograd.grad(score, x)
                gradient = gradient / gradient.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
                if bases is None:  # from noise: blurring the image is the prior
                    x = gaussian_blur(x.detach() + lr * gradient, blur_sigma).clamp(0, 1)
                else:  # dream: keep the photo's detail, blur only what is painted on it
                    x = (x.detach() + lr * gaussian_blur(gradient, blur_sigma)).clamp(0, 1)
                bar.update()
    bar.close()
    return x.detach().clamp(0, 1)


def objective_value(model: nn.Module, images: torch.Tensor, **objective: object) -> torch.Tensor:
    """The objective (B,) of `images`, e.g. to check that the ascent raised it."""
    with torch.no_grad(), Objective(model, **objective) as score:
        return score(images)

