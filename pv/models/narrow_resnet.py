"""Narrow ResNets from torchvision's `BasicBlock`, for small images and CPU budgets (the generated world).

Same child names as torchvision's ResNets (conv1, bn1, relu, layer1..layer4, avgpool, fc), so
`pv.models.Classifier`, `FrozenEncoder`, Grad-CAM's closed form and the decoder treat them like any
ResNet. The stride is 8 (not 32): layer4 keeps a 64 px image at 8 x 8, a latent PV can decode.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.resnet import BasicBlock


class NarrowResNet(nn.Module):
    """(B, 3, H, W) -> logits (B, num_classes); layer4 gives (B, widths[3], H/8, W/8)."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), blocks: Sequence[int] = (1, 1, 1, 1), num_classes: int = 1000):
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError(f"NarrowResNet needs 4 widths and 4 block counts, got {list(widths)} and {list(blocks)}")
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        strides = (1, 2, 2, 1)  # with conv1: total stride 8
        channels = widths[0]
        for index, (width, count, stride) in enumerate(zip(widths, blocks, strides), start=1):
            layers = []
            for block in range(count):
                step = stride if block == 0 else 1
                downsample = None
                if step != 1 or channels != width:
                    downsample = nn.Sequential(nn.Conv2d(channels, width, 1, stride=step, bias=False), nn.BatchNorm2d(width))
                layers.append(BasicBlock(channels, width, step, downsample))
                channels = width
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images):
        x = self.relu(self.bn1(self.conv1(images)))  # (B, w0, H/2, W/2)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, w3, H/8, W/8)
        return self.fc(self.avgpool(x).flatten(1))  # (B, num_classes)


NARROW_RESNETS = {
    "narrow_resnet": {"widths": (16, 32, 64, 128), "blocks": (1, 1, 1, 1)},  # the world's classifier M
    "narrow_resnet_wide": {"widths": (24, 48, 96, 160), "blocks": (1, 1, 1, 1)},
}


def build_narrow_resnet(arch: str, weights: str | None = None, **kwargs) -> NarrowResNet:
    """A randomly initialised narrow ResNet by name (there are no pretrained weights)."""
    if weights is not None:
        raise ValueError(f"{arch} has no pretrained weights; use weights: null")
    return NarrowResNet(**NARROW_RESNETS[arch], **kwargs)
