"""Feature visualization raises its objective; seeded; dream mode; bad objectives."""
from __future__ import annotations

import pytest
import torch

from pv.explain import feature_visualization, objective_value

SMALL = {"size": 32, "octaves": 2, "growth": 1.5, "steps": 6, "lr": 0.05}


@pytest.mark.parametrize("objective", [{"layer": "features.3", "channel": torch.tensor([2, 7])}, {"layer": "features"}, {"class_index": torch.tensor([1, 3])}])
def test_ascent_raises_the_objective(objective, tiny_net):
    start = feature_visualization(tiny_net, **objective, **{**SMALL, "steps": 0}, batch_size=2)  # the seeded noise, upscaled
    result = feature_visualization(tiny_net, **objective, **SMALL, batch_size=2)
    assert result.shape == (2, 3, 32, 32) and result.min() >= 0 and result.max() <= 1
    before, after = objective_value(tiny_net, start, **objective), objective_value(tiny_net, result, **objective)
    assert (after > before).all(), (before, after)


def test_seeded_and_dream(tiny_net):
    a = feature_visualization(tiny_net, layer="features", channel=3, seed=1, **SMALL)
    b = feature_visualization(tiny_net, layer="features", channel=3, seed=1, **SMALL)
    c = feature_visualization(tiny_net, layer="features", channel=3, seed=2, **SMALL)
    assert torch.equal(a, b) and not torch.equal(a, c)
    image = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    dream = feature_visualization(tiny_net, layer="features", channel=3, image=image, **SMALL)
    assert dream.shape == image.shape and 0 <= dream.min() and dream.max() <= 1
    assert (dream - image).abs().mean() < 0.3  # still the image, with something painted on it
    assert objective_value(tiny_net, dream, layer="features", channel=3) > objective_value(tiny_net, image, layer="features", channel=3)


def test_bad_objectives(tiny_net, resnet_classifier):
    with pytest.raises(ValueError, match="'layer9' not found.*layer4"):
        feature_visualization(resnet_classifier, layer="layer9", **SMALL)
    with pytest.raises(ValueError, match=r"channel \[99\] out of range.*16 channels"):
        feature_visualization(tiny_net, layer="features", channel=99, **SMALL)
    with pytest.raises(ValueError, match="out of range"):
        feature_visualization(tiny_net, class_index=5, **SMALL)
    with pytest.raises(ValueError, match="not both"):
        feature_visualization(tiny_net, layer="features", class_index=1, **SMALL)
