"""Grad-CAM: the definition on a hand-built net, the closed-form fast path, Grad-CAM++."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pv.explain import SALIENCY, GradCAM, GradCAMPlusPlus, GuidedBackprop, GuidedGradCAM, upsample_maps


def hand_built_net() -> nn.Sequential:
    """1x1 conv (A_0 = R, A_1 = G - B), in-place ReLU, flatten, a linear layer with known weights."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    linear = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, -1]]).view(2, 3, 1, 1))
        linear.weight.copy_(torch.tensor([[1.0] * 8, [1, 0, 0, 1, 2, -8, -1, 4]]))
    return nn.Sequential(conv, nn.ReLU(inplace=True), nn.Flatten(), linear).eval()


def hand_built_image() -> torch.Tensor:
    red = [[1.0, 2], [3, 4]]
    green = [[0.0, 1], [2, 0]]
    blue = [[1.0, 0], [0, 1]]
    return torch.tensor([red, green, blue])[None]  # (1, 3, 2, 2): A_0 = [[1,2],[3,4]], A_1 = [[-1,1],[2,-1]]


def test_gradcam_matches_the_hand_computed_map():
    # class 1: dy/dA_0 = [[1,0],[0,1]] -> w_0 = 0.5; dy/dA_1 = [[2,-8],[-1,4]] * (A_1 > 0) -> w_1 = -9/4
    #   ReLU(0.5 A_0 - 2.25 A_1) = ReLU([[2.75, -1.25], [-3, 4.25]])
    # class 0: w_0 = 1, w_1 = mean([[0,1],[1,0]]) = 0.5 -> ReLU(A_0 + 0.5 A_1) = [[0.5, 2.5], [4, 3.5]]
    model, image = hand_built_net(), hand_built_image()
    gradcam = GradCAM(model, layer="0")
    raw = gradcam.attribute(image.expand(2, -1, -1, -1), torch.tensor([1, 0]))
    expected = torch.tensor([[[2.75, 0.0], [0.0, 4.25]], [[0.5, 2.5], [4.0, 3.5]]])[:, None]
    torch.testing.assert_close(raw, expected)
    maps = gradcam(image.expand(2, -1, -1, -1), torch.tensor([1, 0]))  # normalised as the authors: x / max
    torch.testing.assert_close(maps, expected / expected.amax((2, 3), True))


def test_gradcam_normalisation_max_keeps_the_weakest_cell_of_an_all_positive_map():
    # class 0's map [[0.5, 2.5], [4, 3.5]] is positive everywhere: divided by its max (the authors' Grad-CAM,
    # the default) its weakest cell is 0.125; min-max scaling would paint it white (0)
    model, image = hand_built_net(), hand_built_image()
    expected = torch.tensor([[0.5, 2.5], [4.0, 3.5]])
    by_max = GradCAM(model, layer="0")(image, torch.tensor([0]))[0, 0]
    torch.testing.assert_close(by_max, expected / 4)
    assert by_max.min() == pytest.approx(0.125)
    minmax = GradCAM(model, layer="0", normalization="minmax")(image, torch.tensor([0]))[0, 0]
    torch.testing.assert_close(minmax, (expected - 0.5) / 3.5)
    assert minmax.min() == 0
    with pytest.raises(ValueError, match="normalization must be one of max, minmax"):
        GradCAM(model, layer="0", normalization="peak")


def test_fast_path_equals_gradient_path(resnet_classifier):
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 3, 1])
    fast, slow = GradCAM(resnet_classifier), GradCAM(resnet_classifier, fast=False)
    assert fast.fast and not slow.fast
    raw_fast, raw_slow = fast.attribute(images, targets), slow.attribute(images, targets)
    assert raw_fast.shape == (3, 1, 2, 2) and raw_fast.abs().sum() > 0
    torch.testing.assert_close(raw_fast, raw_slow, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast(images, targets), slow(images, targets), rtol=1e-4, atol=1e-5)
    # every class from one forward pass, no backward
    maps, logits = fast.all_classes(images)
    assert maps.shape == (3, 4, 2, 2) and not maps.requires_grad
    torch.testing.assert_close(logits, resnet_classifier(images))
    for c in range(4):
        torch.testing.assert_close(maps[:, c : c + 1], slow.attribute(images, c), rtol=1e-4, atol=1e-6)
    # several classes per image
    top = torch.tensor([[0, 1], [2, 3], [3, 0]])
    torch.testing.assert_close(fast.attribute_multi(images, top), slow.attribute_multi(images, top), rtol=1e-4, atol=1e-6)


def test_fast_path_only_where_it_holds(resnet_classifier, tiny_net):
    assert not GradCAM(resnet_classifier, layer="layer3").fast  # not the pooled layer: gradient path
    with pytest.raises(ValueError, match="fast=True"):
        GradCAM(tiny_net, fast=True)


def test_gradcam_plus_plus_weights_match_pytorch_grad_cam(tiny_net):
    reference = pytest.importorskip("pytorch_grad_cam")
    with torch.no_grad():
        tiny_net.fc.weight.mul_(1000)  # gradients well above pytorch-grad-cam's eps = 1e-6 on g^2
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    method = GradCAMPlusPlus(tiny_net, layer="features")
    activations, gradients = method.activations_and_gradients(images, torch.tensor([1, 4]))
    ours = method.channel_weights(activations, gradients).flatten(1)
    theirs = reference.GradCAMPlusPlus.get_cam_weights(None, None, None, None, activations.numpy(), gradients.numpy())
    clear = gradients.abs().amin(dim=(2, 3)) > 0.05  # where their eps is negligible against g^2
    assert clear.sum() > 10
    torch.testing.assert_close(ours[clear], torch.from_numpy(theirs).float()[clear], rtol=1e-3, atol=1e-6)


def test_guided_gradcam_is_guided_backprop_times_gradcam(tiny_net):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([1, 4])
    cam = GradCAM(tiny_net).attribute(images, targets)  # (2, 1, 16, 16)
    guided = GuidedBackprop(tiny_net).attribute(images, targets)  # (2, 3, 32, 32)
    product = guided * upsample_maps(cam, (32, 32))  # the definition
    assert product.abs().amax() < 1e-6  # tiny: a product of two small raw maps
    method = GuidedGradCAM(tiny_net)
    raw = method.attribute(images, targets)
    # Grad-CAM scaled to a maximum of 1 per image: the raw map is in guided-backprop units
    torch.testing.assert_close(raw, product / cam.flatten(1).amax(1).view(-1, 1, 1, 1))
    assert (raw.flatten(1).abs().amax(1) > 0.05 * guided.flatten(1).abs().amax(1)).all()
    # the normalised map is that of the product itself: min-max of sum_c |product_c|, computed in float64
    reduced = product.double().abs().sum(1, keepdim=True).flatten(1)
    low, high = reduced.amin(1, keepdim=True), reduced.amax(1, keepdim=True)
    expected = ((reduced - low) / (high - low)).view(2, 1, 32, 32).float()
    torch.testing.assert_close(method(images, targets), expected, atol=1e-6, rtol=0)


def test_default_layer_of_other_models(tiny_net):
    import torchvision

    assert GradCAM(tiny_net).layer_name == "features"
    assert GradCAM(torchvision.models.resnet18(weights=None)).layer_name == "layer4"


def test_unknown_layer_lists_valid_names(resnet_classifier):
    for name in ("gradcam", "gradcam++", "guided_gradcam"):
        with pytest.raises(ValueError, match=r"'layer9' not found.*layer4\.1"):
            SALIENCY[name](resnet_classifier, layer="layer9")
