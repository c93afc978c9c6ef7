"""Loading models (issue 9.1), checkpoints that cannot run code (issue 12.1), classifier facts and the
encoder fingerprint (issue 10.1)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from pv.errors import CheckpointError, EncoderMismatchError
from pv.models import (
    Classifier, Decoder, FrozenEncoder, TorchvisionClassifier, check_encoder_match, encoder_fingerprint, load_checkpoint,
    load_classifier, load_decoder, pooled_linear_head, probabilities,
)
from pv.models.weights import build_torchvision_model


class WritesMarker:
    """Unpickling this object runs `os.system("touch <marker>")`: what a hostile checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(path: Path, marker: Path, **content) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": WritesMarker(marker), **content}, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(tmp_path):
    marker = tmp_path / "marker"
    classifier = hostile_checkpoint(tmp_path / "cls.ckpt", marker, classifier_config={"arch": "resnet18", "num_classes": 2})
    decoder = hostile_checkpoint(tmp_path / "dec.ckpt", marker, decoder_config={"in_channels": 8, "widths": [8]})
    for load in (
        lambda: load_checkpoint(classifier),
        lambda: load_classifier(checkpoint=str(classifier)),
        lambda: Classifier.from_checkpoint(classifier),
        lambda: FrozenEncoder("resnet18", "layer4", checkpoint=str(classifier)),
        lambda: load_decoder(decoder),
    ):
        with pytest.raises(CheckpointError) as info:
            load()
        message = str(info.value)
        assert "\n" not in message and "Refused" in message and "posix.system" in message
        assert str(tmp_path) in message  # names the file
    assert not marker.exists(), "unpickling ran the checkpoint's code"


@pytest.mark.parametrize("content,reason", [(None, "does not exist"), (b"", "truncated"), (b"not a checkpoint", "damaged")])
def test_unreadable_checkpoints_give_one_line_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "model.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as info:
        load_classifier(checkpoint=str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_truncated_checkpoint_and_the_wrong_kind_are_named(tmp_path):
    path = tmp_path / "half.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(CheckpointError, match="half.ckpt.*truncated"):
        load_decoder(path)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a pv classifier checkpoint"):
        load_classifier(checkpoint=str(path))
    with pytest.raises(CheckpointError, match="not a pv decoder checkpoint"):
        load_decoder(path)


def test_numpy_random_states_are_allowed(tmp_path):
    import numpy as np

    path = tmp_path / "rng.ckpt"
    torch.save({"state_dict": {}, "numpy_rng": np.random.default_rng(0).bit_generator.state, "legacy": np.random.get_state()}, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["legacy"][0] == "MT19937"


def test_one_rule_for_linear_heads_on_pooled_features():
    with torch.device("meta"):
        assert isinstance(pooled_linear_head(build_torchvision_model("resnet18")), nn.Linear)
        assert pooled_linear_head(build_torchvision_model("mobilenet_v3_small")) is None
    assert isinstance(load_classifier(arch="resnet18", weights="none"), Classifier)
    wrapped = load_classifier(arch="mobilenet_v3_small")
    assert isinstance(wrapped, TorchvisionClassifier) and not wrapped.training
    assert FrozenEncoder("mobilenet_v3_small", "features", weights=None).head is None  # no random stand-in head
    with pytest.raises(ValueError, match="not one linear layer on pooled features"):
        Classifier("mobilenet_v3_small", num_classes=None, weights=None)


def test_classifiers_know_their_activation_and_input_size(tmp_path):
    imagenet = Classifier("resnet18", num_classes=None, weights=None)
    assert (imagenet.activation, imagenet.input_size) == ("softmax", 224)
    assert (TorchvisionClassifier.activation, TorchvisionClassifier.input_size) == ("softmax", 224)
    multilabel = Classifier("resnet18", num_classes=3, weights=None, input_size=64)
    assert (multilabel.activation, multilabel.input_size) == ("sigmoid", 64)
    assert multilabel.config["activation"] == "sigmoid" and multilabel.config["input_size"] == 64
    path = tmp_path / "cls.ckpt"
    state = {"model." + k: v for k, v in multilabel.state_dict().items()}
    torch.save({"state_dict": state, "classifier_config": multilabel.config}, path)
    restored = load_classifier(checkpoint=str(path))
    assert (restored.activation, restored.input_size, restored.checkpoint_path) == ("sigmoid", 64, str(path))
    old = {k: v for k, v in multilabel.config.items() if k not in ("activation", "input_size")}  # saved before they existed
    torch.save({"state_dict": state, "classifier_config": old}, path)
    assert (load_classifier(checkpoint=str(path)).activation, load_classifier(checkpoint=str(path)).input_size) == ("sigmoid", 224)


def test_probabilities_is_the_one_activation():
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    torch.testing.assert_close(probabilities(logits, "sigmoid"), logits.sigmoid())
    torch.testing.assert_close(probabilities(logits, "softmax"), logits.softmax(1))
    assert probabilities(logits, "softmax").sum() == pytest.approx(1)
    with pytest.raises(ValueError, match="activation must be one of"):
        probabilities(logits, "relu")


def test_fingerprint_tells_random_initialisations_apart():
    torch.manual_seed(0)
    encoder = FrozenEncoder("resnet18", "layer3", weights=None)
    torch.manual_seed(0)
    same = load_classifier(arch="resnet18")  # the classifier the encoder was cut from
    torch.manual_seed(1)
    other = load_classifier(arch="resnet18")
    trained = encoder.fingerprint()
    assert set(trained) == {"arch", "layer", "weights", "checkpoint", "params_sha256"}
    assert trained["params_sha256"] == encoder_fingerprint(same, arch="resnet18", layer="layer3")["params_sha256"]
    current = encoder_fingerprint(other, arch="resnet18", layer="layer3")
    assert current["params_sha256"] != trained["params_sha256"]
    assert encoder_fingerprint(same, arch="resnet18", layer="layer4")["params_sha256"] != trained["params_sha256"]
    check_encoder_match(trained, encoder_fingerprint(same, arch="resnet18", layer="layer3"), decoder_name="D", classifier_name="M")
    with pytest.raises(EncoderMismatchError, match=r"D was trained to invert resnet18 layer3 \(random init.*but M is resnet18 layer3"):
        check_encoder_match(trained, current, decoder_name="D", classifier_name="M")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_encoder_match(trained, current, decoder_name="D", classifier_name="M", allow_mismatch=True)
    assert any("allow-encoder-mismatch" in str(w.message) for w in caught)


def test_load_decoder_returns_the_recorded_fingerprint(tmp_path):
    torch.manual_seed(0)
    encoder = FrozenEncoder("resnet18", "layer4", weights=None)
    decoder = Decoder(512, (8, 8))
    path = tmp_path / "dec.ckpt"
    torch.save({"state_dict": {"decoder." + k: v for k, v in decoder.state_dict().items()}, "decoder_config": decoder.config,
                "encoder_config": encoder.config, "encoder_fingerprint": encoder.fingerprint()}, path)
    loaded, encoder_config = load_decoder(path)
    assert encoder_config["fingerprint"] == encoder.fingerprint() and encoder_config["layer"] == "layer4"


class RandomImages(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return {"image": torch.rand(3, 32, 32, generator=generator), "label": (torch.rand(3, generator=generator) > 0.5).float()}


@pytest.mark.slow
def test_pv_lightning_checkpoints_load_with_weights_only(tmp_path):
    """pv's own checkpoints (hyper-parameters, optimizer and callback states included) are plain data."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from pv import ClassifierModule, DecoderModule

    loader = torch.utils.data.DataLoader(RandomImages(), batch_size=2)
    torch.manual_seed(0)
    modules = {
        "classifier": ClassifierModule(Classifier("resnet18", num_classes=3, weights=None)),
        "decoder": DecoderModule(FrozenEncoder("resnet18", "layer4", weights=None), Decoder(512, (8, 8, 8, 8, 8))),
    }
    paths = {}
    for name, module in modules.items():
        checkpointing = ModelCheckpoint(dirpath=tmp_path / name, save_last=True, monitor="val/loss")
        trainer = pl.Trainer(
            max_steps=2, limit_val_batches=1, accelerator="cpu", logger=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[checkpointing], default_root_dir=tmp_path,
        )
        trainer.fit(module, loader, loader)
        paths[name] = tmp_path / name / "last.ckpt"
        checkpoint = load_checkpoint(paths[name])  # weights_only=True
        assert checkpoint["optimizer_states"] and checkpoint["callbacks"]
    classifier = load_classifier(checkpoint=str(paths["classifier"]))
    torch.testing.assert_close(classifier.head.weight, modules["classifier"].model.head.weight)
    decoder, encoder_config = load_decoder(paths["decoder"])
    assert encoder_config["fingerprint"] == modules["decoder"].encoder.fingerprint()
    torch.testing.assert_close(decoder.to_rgb.weight, modules["decoder"].decoder.to_rgb.weight)
