"""Options added for real photos (issue 19): resize-conv decoders, DSIM on a resized reconstruction, smaller outputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pv.lit.decoder_module import DecoderModule
from pv.losses import PerceptionLoss
from pv.models.decoder import Decoder, load_decoder


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_resize_conv_decoder_shape_and_reload(tmp_path, upsample):
    decoder = Decoder(in_channels=8, widths=(6, 4), upsample=upsample)
    assert decoder(torch.rand(2, 8, 3, 3)).shape == (2, 3, 12, 12)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in decoder.modules())
    assert decoder.config["upsample"] == upsample
    module_state = {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    torch.save({"decoder_config": decoder.config, "state_dict": module_state}, tmp_path / "d.ckpt")
    loaded, _ = load_decoder(tmp_path / "d.ckpt")
    z = torch.rand(1, 8, 3, 3)
    assert torch.allclose(loaded(z), decoder.eval()(z))


def test_decoder_defaults_unchanged():
    decoder = Decoder(in_channels=8, widths=(4,))
    assert "upsample" not in decoder.config and isinstance(decoder.blocks[0][0], nn.ConvTranspose2d)
    with pytest.raises(ValueError, match="upsample"):
        Decoder(in_channels=8, widths=(4,), upsample="pixelshuffle")


def test_dsim_reads_the_encoder_input():
    seen = []
    encoder = lambda x: seen.append(x.shape) or x.mean(1, keepdim=True)  # noqa: E731
    small, image = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 8, 8)
    loss = PerceptionLoss((0, 0, 1))
    terms = loss(small, torch.rand(1, 3, 4, 4), encoder, image.mean(1, keepdim=True), encoder_input=image)
    assert seen == [(1, 3, 8, 8)] and float(terms.dsim) == 0.0


class TinyEncoder(nn.Module):
    out_channels = 4
    config = {"arch": "tiny", "layer": "conv"}

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)

    def forward(self, x):
        return self.conv(x)


def test_resize_output_trains_a_smaller_decoder():
    module = DecoderModule(TinyEncoder(), Decoder(in_channels=4, widths=(4,)), resize_output=True)  # 2x up: 8 px from a 16 px image
    images = torch.rand(2, 3, 16, 16)
    loss = module._common_step({"image": images}, "val")
    assert torch.isfinite(loss)
    assert set(module.metrics["val"].compute()) == {"ssim", "psnr"}
    with pytest.raises(ValueError, match="does not match"):
        DecoderModule(TinyEncoder(), Decoder(in_channels=4, widths=(4,)))._common_step({"image": images}, "val")
