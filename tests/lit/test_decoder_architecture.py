"""The decoder's architecture options and the authors' decoder of the paper config."""
import pytest
import torch
import yaml

from pv.models import Decoder
from tests.config_files import composed

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_per_block_convolutions_and_kernel_2_double_the_size_each_block():
    decoder = Decoder(64, (16, 8, 8), convs_per_block=[2, 1, 0], upsample_kernel=2)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in block) for block in decoder.blocks]
    assert convs == [2, 1, 0]
    assert all(block[0].kernel_size == (2, 2) for block in decoder.blocks)
    assert decoder(torch.rand(1, 64, 3, 5)).shape == (1, 3, 24, 40)
    with pytest.raises(ValueError, match="one per block"):
        Decoder(64, (16, 8), convs_per_block=[1, 1, 1])


def test_paper_config_builds_the_authors_decoder_of_16_7_million_parameters():
    config = composed(CONFIGS / "decoder" / "voc_resnet50.yaml")
    decoder = Decoder(**config["model"]["init_args"]["decoder"]["init_args"])
    count = sum(p.numel() for p in decoder.parameters())
    print(f"authors' decoder: {count:,} parameters")
    assert 16_600_000 < count < 16_800_000  # authors' make_decoder_model: 16.7 M (pv's earlier decoder: 18.8 M)
    assert decoder(torch.rand(1, 2048, 7, 7)).shape == (1, 3, 224, 224)
