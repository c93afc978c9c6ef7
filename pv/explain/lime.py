"""LIME for images (Ribeiro et al. 2016): a weighted linear surrogate over scikit-image superpixels.

Batched: all images' perturbations go through the model `batch_size` at a time, and the surrogates of
all images are fitted at once (one batched linear solve). Seeded with a private generator, so the
same call gives the same map. Only the segmentation runs per image (scikit-image is CPU/numpy).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pv.explain.saliency import Saliency, TargetsLike

SEGMENTATIONS = ("slic", "quickshift", "felzenszwalb")
HIDE = ("mean", "black")
ACTIVATIONS = ("softmax", "sigmoid", "logit")


def superpixels(images: torch.Tensor, method: str = "slic", n_segments: int = 50) -> torch.Tensor:
    """Segment each image (B, 3, H, W) in [0, 1] -> labels (B, H, W), 0..n_b-1 per image, on CPU."""
    from skimage import segmentation

    labels = []
    for image in images.detach().float().cpu().permute(0, 2, 3, 1).numpy():  # per image: skimage is numpy
        if method == "slic":
            label = segmentation.slic(image, n_segments=n_segments, compactness=10, start_label=0)
            if len(np.unique(label)) < max(2, n_segments // 2):  # textured / tiny images merge into few blobs
                label = segmentation.slic(image, n_segments=n_segments, compactness=10, start_label=0, enforce_connectivity=False)
        elif method == "quickshift":
            label = segmentation.quickshift(image.astype(np.float64), kernel_size=4, max_dist=200, ratio=0.2)
        else:
            label = segmentation.felzenszwalb(image, scale=100, sigma=0.5, min_size=50)
        labels.append(np.unique(label, return_inverse=True)[1].reshape(label.shape))  # relabel 0..n-1
    return torch.from_numpy(np.stack(labels)).long()


class Lime(Saliency):
    """Raw attribution (B, 1, H, W): each pixel carries its superpixel's surrogate coefficient.

    `n_samples` binary masks per image (the first keeps everything) switch superpixels off
    (replaced by their mean colour, `hide="mean"`, or black); the model's `activation`-ed score of
    the target class is regressed on the masks with ridge (`alpha`) and LIME's kernel
    sqrt(exp(-d^2 / kernel_width^2)) of the cosine distance d to the unperturbed image.
    """

    title = "LIME"

    def __init__(
        self,
        model: nn.Module,
        *,
        n_samples: int = 256,
        n_segments: int = 50,
        segmentation: str = "slic",
        hide: str = "mean",
        activation: str = "softmax",
        kernel_width: float = 0.25,
        alpha: float = 1.0,
        batch_size: int = 64,
        seed: int = 0,
        **options,
    ):
        super().__init__(model, **options)
        for name, value, allowed in (("segmentation", segmentation, SEGMENTATIONS), ("hide", hide, HIDE), ("activation", activation, ACTIVATIONS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if n_samples < 2 or batch_size < 1:
            raise ValueError(f"n_samples must be >= 2 and batch_size >= 1, got {n_samples} and {batch_size}")
        self.n_samples, self.n_segments, self.segmentation = n_samples, n_segments, segmentation
        self.hide, self.activation, self.kernel_width, self.alpha = hide, activation, kernel_width, alpha
        self.batch_size, self.seed = batch_size, seed

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        if self.activation == "softmax":
            return logits.softmax(dim=1)
        return logits.sigmoid() if self.activation == "sigmoid" else logits

    def hidden(self, images: torch.Tensor, segments: torch.Tensor, n_features: int) -> torch.Tensor:
        """What replaces a switched-off superpixel: (B, 3, H, W)."""
        if self.hide == "black":
            return torch.zeros_like(images)
        b, c = images.shape[:2]
        flat = segments.flatten(1)  # (B, HW)
        sums = images.new_zeros(b, c, n_features).scatter_add_(2, flat[:, None].expand(-1, c, -1), images.flatten(2))
        counts = images.new_zeros(b, 1, n_features).scatter_add_(2, flat[:, None], images.new_ones(b, 1, flat.shape[1]))
        means = sums / counts.clamp_min(1)  # (B, 3, F)
        return means.gather(2, flat[:, None].expand(-1, c, -1)).view_as(images)

    @torch.no_grad()
    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        targets = self.targets(images, targets)
        b, s, device = len(images), self.n_samples, images.device
        segments = superpixels(images, self.segmentation, self.n_segments).to(device)  # (B, H, W)
        n_features = int(segments.max()) + 1
        valid = torch.arange(n_features, device=device) <= segments.flatten(1).amax(1, keepdim=True)  # (B, F)
        generator = torch.Generator().manual_seed(self.seed)
        masks = torch.randint(0, 2, (b, s, n_features), generator=generator).to(device, images.dtype)
        masks[:, 0] = 1  # the first sample is the image itself
        masks = masks * valid[:, None]  # (B, S, F); padding features of images with fewer superpixels are 0
        background = self.hidden(images, segments, n_features)  # (B, 3, H, W)

        scores = images.new_empty(b * s)
        pairs = torch.arange(b * s, device=device)
        for chunk in pairs.split(self.batch_size):  # perturbations of all images, batch_size at a time
            image_index = chunk // s
            keep = masks.view(b * s, n_features)[chunk].gather(1, segments[image_index].flatten(1))  # (n, HW)
            keep = keep.view(len(chunk), 1, *images.shape[2:])  # (n, 1, H, W)
            perturbed = keep * images[image_index] + (1 - keep) * background[image_index]
            scores[chunk] = self.score(self.model(perturbed)).gather(1, targets[image_index, None]).squeeze(1)
        scores = scores.view(b, s)

        # LIME's kernel on the cosine distance between each mask and the all-on mask (valid features only)
        ones = valid.to(images.dtype)[:, None]  # (B, 1, F)
        cosine = (masks * ones).sum(2) / (masks.norm(dim=2) * ones.norm(dim=2)).clamp_min(1e-12)  # (B, S)
        weights = torch.exp(-((1 - cosine) ** 2) / self.kernel_width**2).sqrt()  # (B, S)
        coefficients = weighted_ridge(masks, scores, weights, self.alpha)  # (B, F)
        return coefficients.gather(1, segments.flatten(1)).view(b, 1, *images.shape[2:])  # (B, 1, H, W)

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        return attribution  # signed: min-max puts the strongest support at 1, the strongest opposition at 0


def weighted_ridge(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per batch element, argmin_beta sum_s w_s (y_s - b - x_s beta)^2 + alpha |beta|^2 (intercept b not penalised).

    x (B, S, F), y (B, S), weights (B, S) -> beta (B, F). One batched solve.
    """
    x, y, weights = x.double(), y.double(), weights.double()
    w = weights / weights.sum(1, keepdim=True)  # (B, S)
    x_centered = x - (w[..., None] * x).sum(1, keepdim=True)  # weighted means removed: the intercept
    y_centered = y - (w * y).sum(1, keepdim=True)
    xtw = x_centered.transpose(1, 2) * weights[:, None]  # (B, F, S)
    gram = xtw @ x_centered + alpha * torch.eye(x.shape[2], dtype=x.dtype, device=x.device)  # (B, F, F)
    beta = torch.linalg.solve(gram, (xtw @ y_centered[..., None]).squeeze(-1))  # (B, F)
    return beta.float()
