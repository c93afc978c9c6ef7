import pytest
import torch

from pv.models import Classifier, Decoder, FrozenEncoder, layer_names
from pv.models.weights import WeightsUnavailableError, build_torchvision_model


@pytest.fixture(scope="module")
def encoder() -> FrozenEncoder:
    torch.manual_seed(0)
    return FrozenEncoder("resnet18", "layer4", weights=None)


def test_encoder_shapes_and_layers(encoder):
    latent = encoder(torch.rand(2, 3, 64, 64))
    assert latent.shape == (2, 512, 2, 2)
    assert encoder.out_channels == 512
    layer3 = FrozenEncoder("resnet18", "layer3", weights=None)
    assert layer3(torch.rand(1, 3, 64, 64)).shape == (1, 256, 4, 4)
    assert layer3.head is None and encoder.head is not None


def test_encoder_is_frozen_for_good(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = torch.nn.Sequential(encoder)
    parent.train()
    assert not any(m.training for m in encoder.modules())
    buffers = {k: v.clone() for k, v in encoder.state_dict().items()}
    encoder(torch.rand(4, 3, 64, 64) * 3)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, buffers[key]), key


def test_gradient_flows_through_frozen_encoder_to_input(encoder):
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    encoder(images).square().mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError, match="layer4.1") as info:
        FrozenEncoder("resnet18", "layer9", weights=None)
    assert "layer9" in str(info.value)
    assert "layer4" in layer_names(Classifier("resnet18", 3, weights=None).trunk)


def test_unknown_arch_and_weights_are_named():
    with pytest.raises(ValueError, match="Unknown arch 'resnet51'"):
        build_torchvision_model("resnet51")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_torchvision_model("resnet18", weights="IMAGENET9K")


def test_offline_weights_message_says_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        build_torchvision_model("resnet18", weights="IMAGENET1K_V1")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message


@pytest.mark.parametrize("widths,latent,size", [((8, 8, 8, 8, 8), 2, 64), ((16, 8, 8), 4, 32)])
def test_decoder_shapes_and_range(widths, latent, size):
    decoder = Decoder(32, widths)
    image = decoder(torch.randn(3, 32, latent, latent))
    assert image.shape == (3, 3, size, size)
    assert image.min() >= 0 and image.max() <= 1
    assert decoder.upscale == size // latent


def test_paper_decoder_maps_7x7_to_224():
    decoder = Decoder()  # paper widths (512, 512, 256, 128, 64)
    assert decoder(torch.randn(1, 2048, 7, 7)).shape == (1, 3, 224, 224)
    no_skips = [m for m in decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(no_skips) == 5 and all(m.bias is None for m in no_skips)


def test_every_decoder_parameter_gets_a_gradient():
    decoder = Decoder(16, (8, 8, 4))
    decoder(torch.randn(2, 16, 3, 3)).mean().backward()
    for name, parameter in decoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_decoder_rejects_wrong_latent_channels():
    with pytest.raises(ValueError, match="expects 16 latent channels, got 8"):
        Decoder(16, (8,))(torch.randn(1, 8, 2, 2))
