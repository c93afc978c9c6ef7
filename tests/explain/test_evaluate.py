"""Deletion / insertion curves and AUC, and the decoder metrics."""
from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from pv.explain.evaluate import auc, decoder_metrics, deletion_insertion_curves


class CornerDetector(nn.Module):
    """Class 0's logit is high when the top-left 8x8 corner is bright; class 1's logit is 0."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        corner = 40 * (images[:, :, :8, :8].mean((1, 2, 3)) - 0.25)
        return torch.stack([corner, torch.zeros_like(corner)], dim=1)


def corner_map() -> torch.Tensor:
    good = torch.zeros(1, 1, 16, 16)
    good[..., :8, :8] = 1
    return good + torch.linspace(0, 0.01, 256).view(1, 1, 16, 16)  # break ties deterministically


def test_deletion_and_insertion_reward_the_right_map():
    model, images, targets = CornerDetector(), torch.ones(1, 3, 16, 16), torch.tensor([0])
    good, bad = corner_map(), 1 - corner_map()
    black = torch.zeros_like(images)
    deletion = {name: deletion_insertion_curves(model, images, m, targets, n_steps=16, batch_size=5) for name, m in (("good", good), ("bad", bad))}
    insertion = {
        name: deletion_insertion_curves(model, images, m, targets, mode="insertion", n_steps=16, substrate=black)
        for name, m in (("good", good), ("bad", bad))
    }
    assert deletion["good"].shape == (1, 17)
    p_image, p_black = model(images).softmax(1)[0, 0], model(black).softmax(1)[0, 0]
    for curves in (deletion, insertion):
        start, end = (p_image, p_black) if curves is deletion else (p_black, p_image)
        torch.testing.assert_close(curves["good"][0, 0], start)
        torch.testing.assert_close(curves["good"][0, -1], end)
    assert auc(deletion["good"]) < 0.2 < 0.7 < auc(deletion["bad"])
    assert auc(insertion["good"]) > 0.7 > 0.2 > auc(insertion["bad"])
    torch.testing.assert_close(auc(torch.full((2, 9), 0.5)), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="mode"):
        deletion_insertion_curves(model, images, good, targets, mode="sideways")


def test_decoder_metrics(resnet_classifier, small_decoder):
    from pv.explain import PerceptionVisualizer

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    visualizer = PerceptionVisualizer(resnet_classifier, small_decoder, {"arch": "resnet18", "layer": "layer4"})
    metrics = decoder_metrics(visualizer, images)
    assert set(metrics) == {"ssim", "psnr", "latent_error", "latent_relative_error", "top1_agreement"}
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in metrics.values())
    # a perfect decoder: y = x
    perfect = types.SimpleNamespace(latent=visualizer.latent, reconstruct=lambda x, latent=None: x, classifier=resnet_classifier)
    metrics = decoder_metrics(perfect, images)
    torch.testing.assert_close(metrics["ssim"], torch.ones(2))
    assert (metrics["latent_error"] == 0).all() and (metrics["top1_agreement"] == 1).all() and (metrics["psnr"] >= 99).all()
