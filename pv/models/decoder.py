"""The PV decoder D: latent (B, C, h, w) -> image (B, 3, 32h, 32w), no skip connections."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class UpBlock(nn.Sequential):
    """x2 upsampling: transposed conv (linear) -> BatchNorm -> 3x3 conv -> LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, convs: int = 1, negative_slope: float = 0.2):
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        for _ in range(convs):
            layers += [nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.LeakyReLU(negative_slope)]
        super().__init__(*layers)


class Decoder(nn.Module):
    """The paper's decoder: one `UpBlock` per width, then a 3x3 conv to RGB and a sigmoid.

    With the default five widths a 7x7 latent becomes a 224x224 image (about 23 GFLOP per image).
    """

    def __init__(
        self,
        in_channels: int = 2048,
        widths: Sequence[int] = (512, 512, 256, 128, 64),
        convs_per_block: int = 1,
        out_channels: int = 3,
    ):
        super().__init__()
        if not widths:
            raise ValueError("Decoder widths must list at least one block")
        channels = [in_channels, *widths]
        self.in_channels = in_channels
        self.config = {"in_channels": in_channels, "widths": list(widths), "convs_per_block": convs_per_block, "out_channels": out_channels}
        self.upscale = 2 ** len(widths)
        self.blocks = nn.Sequential(*(UpBlock(c_in, c_out, convs_per_block) for c_in, c_out in zip(channels, channels[1:])))
        self.to_rgb = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.shape[1] != self.in_channels:
            raise ValueError(f"Decoder expects {self.in_channels} latent channels, got {latent.shape[1]}")
        features = self.blocks(latent)  # (B, C, h, w) -> (B, widths[-1], h*2^n, w*2^n)
        return torch.sigmoid(self.to_rgb(features))  # (B, 3, h*2^n, w*2^n) in [0, 1]


def load_decoder(path) -> tuple[Decoder, dict]:
    """Rebuild the decoder saved by `pv.DecoderModule` and return it with its encoder's config.

    The encoder config ({"arch", "layer", "weights", "checkpoint"}) says which latent it decodes.
    """
    from pv.models.classifier import load_checkpoint

    checkpoint = load_checkpoint(path)
    if "decoder_config" not in checkpoint:
        raise ValueError(f"{path} is not a pv decoder checkpoint (no 'decoder_config'; was it a classifier?)")
    decoder = Decoder(**checkpoint["decoder_config"])
    state = {k[len("decoder."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("decoder.")}
    try:
        decoder.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: decoder weights do not match its config: {str(err).splitlines()[0]}") from None
    return decoder.eval(), checkpoint.get("encoder_config", {})
