"""LIME for images (Ribeiro et al. 2016): a weighted linear surrogate over scikit-image superpixels.

Batched, with no per-sample Python loop: the perturbations of all images go through the model a batch
at a time (the batch is sized from a probe of the model's activations and a memory budget, see
`pv.explain.batching`; `batch_size` overrides it), under `torch.inference_mode`. One segmentation and
one set of perturbations per image serve every class asked for (`attribute_multi`): one forward pass
scores all classes, and all surrogates are fitted by one batched solve. Seeded with a private
generator, so the same call gives the same map. Scores are the classifier's own probabilities
(`pv.models.probabilities` with `getattr(model, "activation", "softmax")`: sigmoid for pv's
multi-label classifiers), computed in fp32 even under bf16 autocast.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pv.explain.batching import ActivationProbe, batch_size_for
from pv.explain.saliency import Saliency, TargetsLike, as_targets, check_images
from pv.models.classifier import probabilities
from pv.models.precision import matches_model_format

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
    (replaced by their mean colour, `hide="mean"`, or black); the model's score of the target class
    (`activation`: None = the model's own, else "softmax", "sigmoid" or "logit") is regressed on the
    masks with ridge (`alpha`) and LIME's kernel sqrt(exp(-d^2 / kernel_width^2)) of the cosine
    distance d to the unperturbed image. `batch_size=None` sizes model batches to fit memory.
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
        activation: str | None = None,
        kernel_width: float = 0.25,
        alpha: float = 1.0,
        batch_size: int | None = None,
        seed: int = 0,
        **options,
    ):
        super().__init__(model, **options)
        activation = activation or getattr(model, "activation", None) or "softmax"
        for name, value, allowed in (("segmentation", segmentation, SEGMENTATIONS), ("hide", hide, HIDE), ("activation", activation, ACTIVATIONS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if n_samples < 2 or (batch_size is not None and batch_size < 1):
            raise ValueError(f"n_samples must be >= 2 and batch_size >= 1, got {n_samples} and {batch_size}")
        self.n_samples, self.n_segments, self.segmentation = n_samples, n_segments, segmentation
        self.hide, self.activation, self.kernel_width, self.alpha = hide, activation, kernel_width, alpha
        self.batch_size, self.seed = batch_size, seed

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) -> fp32 scores (N, K) by the classifier's activation."""
        return probabilities(logits.to(torch.promote_types(logits.dtype, torch.float32)), self.activation)

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

    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        targets = self.targets(images, targets)
        return self.explain(images, targets[:, None])[:, 0]  # (B, 1, H, W)

    def attribute_multi(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """K classes per image from one segmentation and one set of scored perturbations: (B, K, 1, H, W)."""
        check_images(images)
        b, k = targets.shape
        self.targets(images[:1], 0)  # learns the class count if the model does not declare it
        targets = as_targets(targets.reshape(-1), b * k, self._num_classes, images.device).view(b, k)
        return self.explain(images, targets)

    def explain(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W), targets (B, K) -> surrogate coefficients painted on the superpixels (B, K, 1, H, W)."""
        images = images.detach().to(torch.promote_types(images.dtype, torch.float32))  # bf16 in: fp32 sums
        b, s, device, (h, w) = len(images), self.n_samples, images.device, images.shape[2:]
        segments = superpixels(images, self.segmentation, self.n_segments).to(device)  # (B, H, W): once per image
        n_features = int(segments.max()) + 1
        valid = torch.arange(n_features, device=device) <= segments.flatten(1).amax(1, keepdim=True)  # (B, F)
        generator = torch.Generator().manual_seed(self.seed)
        masks = torch.randint(0, 2, (b, s, n_features), generator=generator).to(device, images.dtype)
        masks[:, 0] = 1  # the first sample is the image itself
        masks = masks * valid[:, None]  # (B, S, F); padding features of images with fewer superpixels are 0
        scores = self.perturbation_scores(images, segments, masks, targets).clone()  # (B, S, K), out of inference mode

        # LIME's kernel on the cosine distance between each mask and the all-on mask (valid features only)
        ones = valid.to(masks.dtype)[:, None]  # (B, 1, F)
        cosine = (masks * ones).sum(2) / (masks.norm(dim=2) * ones.norm(dim=2)).clamp_min(1e-12)  # (B, S)
        weights = torch.exp(-((1 - cosine) ** 2) / self.kernel_width**2).sqrt()  # (B, S)
        coefficients = weighted_ridge(masks, scores, weights, self.alpha)  # (B, F, K): one solve per image
        k = targets.shape[1]
        painted = coefficients.gather(1, segments.flatten(1)[..., None].expand(-1, -1, k))  # (B, HW, K)
        return painted.transpose(1, 2).reshape(b, k, 1, h, w)  # (B, K, 1, H, W)

    @torch.inference_mode()
    def perturbation_scores(self, images: torch.Tensor, segments: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The targets' fp32 scores of every perturbation: images (B, 3, H, W), segments (B, H, W), masks (B, S, F),
        targets (B, K) -> (B, S, K). Batches of (image, sample) pairs across all images, no per-sample loop."""
        b, s, device, (h, w) = len(images), masks.shape[1], images.device, images.shape[2:]
        background = self.hidden(images, segments, masks.shape[2])  # (B, 3, H, W)
        difference = images - background  # perturbed = background + keep * difference
        scores = images.new_empty(b, s, targets.shape[1])  # (B, S, K)
        with ActivationProbe(self.model) as probe:  # the unperturbed images (sample 0) also size the batch
            scores[:, 0] = self.score(self.model(matches_model_format(images, self.model))).gather(1, targets)
        batch = self.batch_size or batch_size_for(probe.bytes_per_input(b, with_gradients=False), device, 4 * images[0].nbytes, probe.largest_per_input(b))
        segment_index = segments.flatten(1)  # (B, HW)
        rest = torch.arange(1, s, device=device)
        pairs = torch.stack(torch.meshgrid(torch.arange(b, device=device), rest, indexing="ij"), -1).view(-1, 2)  # (B*(S-1), 2)
        for chunk in pairs.split(batch):
            image_index, sample_index = chunk[:, 0], chunk[:, 1]
            keep = masks[image_index, sample_index].gather(1, segment_index[image_index]).view(len(chunk), 1, h, w)  # (n, 1, H, W)
            perturbed = torch.addcmul(background[image_index], keep, difference[image_index])  # (n, 3, H, W)
            logits = self.model(matches_model_format(perturbed, self.model))  # (n, K_all)
            scores[image_index, sample_index] = self.score(logits).gather(1, targets[image_index])  # (n, K)
        return scores

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        return attribution  # signed: min-max puts the strongest support at 1, the strongest opposition at 0


def weighted_ridge(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per batch element, argmin_beta sum_s w_s (y_s - b - x_s beta)^2 + alpha |beta|^2 (intercept b not penalised).

    x (B, S, F), y (B, S) or (B, S, K) for K targets sharing x, weights (B, S) -> beta (B, F) or (B, F, K).
    One batched solve (K right-hand sides share one factorisation), in float64.
    """
    single = y.dim() == 2
    x, y, weights = x.double(), (y[..., None] if single else y).double(), weights.double()
    w = weights / weights.sum(1, keepdim=True)  # (B, S)
    x_centered = x - (w[..., None] * x).sum(1, keepdim=True)  # weighted means removed: the intercept
    y_centered = y - (w[..., None] * y).sum(1, keepdim=True)  # (B, S, K)
    xtw = x_centered.transpose(1, 2) * weights[:, None]  # (B, F, S)
    gram = xtw @ x_centered + alpha * torch.eye(x.shape[2], dtype=x.dtype, device=x.device)  # (B, F, F)
    beta = torch.linalg.solve(gram, xtw @ y_centered)  # (B, F, K)
    return (beta[..., 0] if single else beta).float()
