"""Pictures from training: uint8 images for loggers, titled rows, a refused classifier in PVFigure."""
import numpy as np
import pytest
import torch

from pv import ClassifierModule
from pv.errors import EncoderMismatchError
from pv.lit.callbacks import PVFigure, titled_rows, to_uint8_hwc
from pv.models import Classifier, Decoder, FrozenEncoder
from pv import DecoderModule


def test_images_for_loggers_are_uint8_height_width_channels():
    image = torch.rand(3, 10, 12)
    array = to_uint8_hwc(image)
    assert array.dtype == np.uint8 and array.shape == (10, 12, 3)
    assert np.array_equal(array[..., 1], (image[1] * 255).round().to(torch.uint8).numpy())


def test_rows_get_titles_on_a_white_margin():
    rows = [torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 16)]
    untitled = titled_rows(rows, ["", ""])
    picture = titled_rows(rows, ["input", "reconstruction"])
    assert picture.shape[0] == untitled.shape[0] and picture.shape[1] > untitled.shape[1] + 40
    margin = picture[:, : picture.shape[1] - untitled.shape[1] + 8]
    assert (margin < 128).any() and (margin == 255).mean() > 0.7  # dark text on white


def test_pv_figure_refuses_a_classifier_whose_encoder_differs(tmp_path):
    torch.manual_seed(0)
    classifier = ClassifierModule(Classifier("resnet18", num_classes=3, weights=None, class_names=["a", "b", "c"]))
    checkpoint = {"state_dict": classifier.state_dict()}
    classifier.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "other.ckpt")
    module = DecoderModule(FrozenEncoder("resnet18", "layer4", weights=None), Decoder(512, (8, 8, 8, 8, 8)))  # another random init
    with pytest.raises(EncoderMismatchError, match="other.ckpt"):
        PVFigure(classifier=str(tmp_path / "other.ckpt")).on_fit_start(None, module)
    matching = DecoderModule(FrozenEncoder("resnet18", "layer4", checkpoint=str(tmp_path / "other.ckpt")), Decoder(512, (8, 8, 8, 8, 8)))
    PVFigure(classifier=str(tmp_path / "other.ckpt")).on_fit_start(None, matching)
