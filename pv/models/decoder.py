"""The PV decoder D: latent (B, C, h, w) -> image (B, 3, 32h, 32w), no skip connections."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pv.errors import CheckpointError
from pv.models.checkpoint import load_checkpoint
from pv.models.hub import HubMixin, state_dict_error


def transposed_padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) so that a stride-2 transposed conv of `kernel_size` exactly doubles h and w."""
    if kernel_size < 2:
        raise ValueError(f"upsample_kernel must be >= 2, got {kernel_size}")
    padding = (kernel_size - 1) // 2
    return padding, 2 + 2 * padding - kernel_size


UPSAMPLING = ("transposed", "nearest", "bilinear")


class UpBlock(nn.Sequential):
    """x2 upsampling -> BatchNorm -> `convs` x (3x3 conv -> LeakyReLU).

    `upsample="transposed"` (default): a stride-2 transposed conv of `kernel_size` (linear);
    `"nearest"` / `"bilinear"`: resize-conv, an x2 resize then a `kernel_size` conv (no checkerboard
    from uneven kernel overlap, Odena et al. 2016).
    """

    def __init__(self, in_channels: int, out_channels: int, convs: int = 1, kernel_size: int = 3, negative_slope: float = 0.2,
                 upsample: str = "transposed"):  # fmt: skip
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLING)}, got {upsample!r}")
        if upsample == "transposed":
            padding, output_padding = transposed_padding(kernel_size)
            up = [nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=2, padding=padding, output_padding=output_padding, bias=False)]
        else:
            if kernel_size % 2 == 0:
                raise ValueError(f"upsample={upsample!r} needs an odd upsample_kernel (a same-size conv), got {kernel_size}")
            up = [nn.Upsample(scale_factor=2, mode=upsample), nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)]
        layers: list[nn.Module] = [*up, nn.BatchNorm2d(out_channels)]
        for _ in range(convs):
            layers += [nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.LeakyReLU(negative_slope)]
        super().__init__(*layers)


class Decoder(nn.Module, HubMixin, hub_kind="decoder"):
    """The paper's decoder: one `UpBlock` per width, then a 3x3 conv to RGB and a sigmoid.

    `convs_per_block` is one count for every block or one per block; the authors' decoder
    (`make_decoder_model` in their utils.py) is widths (512, 512, 256, 128, 64), convs (2, 2, 2, 1, 1),
    `upsample_kernel=2` and LeakyReLU(0.2) (`negative_slope=0.2`): 16.7 M parameters, 7x7 -> 224x224.
    `upsample`: "transposed" (default, the authors') or resize-conv ("nearest", "bilinear"); see `UpBlock`.
    """

    def __init__(
        self,
        in_channels: int = 2048,
        widths: Sequence[int] = (512, 512, 256, 128, 64),
        convs_per_block: int | Sequence[int] = 1,
        out_channels: int = 3,
        upsample_kernel: int = 3,
        negative_slope: float = 0.2,
        upsample: str = "transposed",
    ):
        super().__init__()
        if not widths:
            raise ValueError("Decoder widths must list at least one block")
        convs = [int(convs_per_block)] * len(widths) if isinstance(convs_per_block, int) else [int(c) for c in convs_per_block]
        if len(convs) != len(widths) or min(convs) < 0:
            raise ValueError(f"convs_per_block must be one count >= 0 or one per block ({len(widths)} widths), got {convs_per_block}")
        channels = [in_channels, *widths]
        self.in_channels = in_channels
        self.config = {
            "in_channels": in_channels, "widths": list(widths), "convs_per_block": convs_per_block if isinstance(convs_per_block, int) else convs,
            "out_channels": out_channels, "upsample_kernel": upsample_kernel, "negative_slope": negative_slope,
        }  # fmt: skip
        if upsample != "transposed":  # recorded only when set, so older checkpoints' configs stay as they were
            self.config["upsample"] = upsample
        self.upscale = 2 ** len(widths)
        self.blocks = nn.Sequential(*(
            UpBlock(c_in, c_out, n, upsample_kernel, negative_slope, upsample) for c_in, c_out, n in zip(channels, channels[1:], convs)
        ))  # fmt: skip
        self.to_rgb = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.shape[1] != self.in_channels:
            raise ValueError(f"Decoder expects {self.in_channels} latent channels, got {latent.shape[1]}")
        features = self.blocks(latent)  # (B, C, h, w) -> (B, widths[-1], h*2^n, w*2^n)
        return torch.sigmoid(self.to_rgb(features))  # (B, 3, h*2^n, w*2^n) in [0, 1]


def load_decoder(path) -> tuple[Decoder, dict]:
    """Rebuild the decoder saved by `pv.DecoderModule` and return it with its encoder's config.

    The encoder config ({"arch", "layer", "weights", "checkpoint"}, plus "fingerprint" when the
    checkpoint has one) says which latent it decodes.
    """
    checkpoint = load_checkpoint(path)
    if "decoder_config" not in checkpoint:
        raise CheckpointError(f"{path} is not a pv decoder checkpoint (no 'decoder_config'; was it a classifier?)")
    decoder = Decoder(**checkpoint["decoder_config"])
    state = {k[len("decoder."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("decoder.")}
    try:
        decoder.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: decoder weights do not match its config: {state_dict_error(err)}") from None
    encoder_config = dict(checkpoint.get("encoder_config", {}))
    if "encoder_fingerprint" in checkpoint:
        encoder_config["fingerprint"] = checkpoint["encoder_fingerprint"]
    return decoder.eval(), encoder_config
