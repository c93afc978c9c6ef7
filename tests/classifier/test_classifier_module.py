"""ClassifierModule: head shapes, BCE training, metrics, frozen backbone, checkpoints."""
from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch

from pv import ClassifierModule
from pv.data import VOC_CLASSES
from pv.lit.classifier_module import MultilabelMetrics
from pv.models import Classifier, FrozenEncoder

from .conftest import SIZE, noise_loader, save_untrained_checkpoint, tiny_classifier, tiny_trainer


def reference_ap(scores: list[float], labels: list[int]) -> float:
    """VOC-style AP without interpolation: mean precision at the rank of each positive (no ties)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, precisions = 0, []
    for rank, i in enumerate(order, start=1):
        if labels[i]:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions)


def test_head_shapes():
    model = tiny_classifier()
    images = torch.rand(2, 3, SIZE, SIZE)
    features = model.forward_features(images)
    assert features.shape == (2, 512, 1, 1)
    assert model.forward_head(features).shape == (2, 20)
    assert model.head.in_features == 512 and model.head.out_features == 20
    module = ClassifierModule(model)
    module.eval()
    assert torch.equal(module(images), model(images))
    assert {k: model.config[k] for k in ("arch", "num_classes", "class_names")} == {"arch": "resnet18", "num_classes": 20, "class_names": list(VOC_CLASSES)}


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.2, 1.5])
def test_threshold_outside_unit_interval_is_rejected(threshold):
    with pytest.raises(ValueError, match="threshold must be in"):
        ClassifierModule(tiny_classifier(), threshold=threshold)


def test_negative_freeze_epochs_rejected():
    with pytest.raises(ValueError, match="freeze_backbone_epochs"):
        ClassifierModule(tiny_classifier(), freeze_backbone_epochs=-1)


def test_bce_training_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    module = ClassifierModule(tiny_classifier())
    batch = next(iter(noise_loader(count=4)))
    optimizer = module.configure_optimizers()
    module.train()
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        for _ in range(15):
            loss = module.training_step(batch, 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert min(losses[-3:]) < min(losses[:3])


def test_map_on_a_hand_made_example():
    # 4 images, 3 classes. Class 0: positives ranked 1st and 3rd -> AP (1 + 2/3) / 2 = 5/6.
    # Class 1: positives ranked 1st and 2nd -> AP 1. Class 2 has no positive: left out of the mean.
    probs = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.7, 0.1], [0.3, 0.6, 0.2], [0.2, 0.4, 0.9]])
    target = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    metrics = MultilabelMetrics(3, threshold=0.5)
    metrics.update(probs[:2], target[:2])  # accumulates over batches
    metrics.update(probs[2:], target[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = metrics.compute()
    assert values["ap"][:2].tolist() == pytest.approx([5 / 6, 1.0])
    assert values["map"].item() == pytest.approx((5 / 6 + 1) / 2)
    # F1 at 0.5: class 0 predicts images 0, 1 (tp 1, fp 1, fn 1) -> 0.5; class 1 predicts 1, 2 -> 1.0.
    assert values["f1_class"][:2].tolist() == pytest.approx([0.5, 1.0])
    assert values["f1"].item() == pytest.approx(0.75)
    assert values["support"].tolist() == [2, 2, 0]
    metrics.reset()
    metrics.update(probs[:1], target[:1])
    assert metrics.compute()["support"].tolist() == [1, 0, 0]


def test_validation_logs_map_per_class_ap_and_f1(tmp_path):
    pl.seed_everything(0)
    module = ClassifierModule(tiny_classifier(), threshold=0.4)
    loader = noise_loader(count=12, batch_size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logged = tiny_trainer(tmp_path).validate(module, loader, verbose=False)[0]
    module.eval()
    images = torch.cat([batch["image"] for batch in loader])
    labels = torch.cat([batch["label"] for batch in loader])
    with torch.no_grad():
        probs = torch.sigmoid(module(images))
    present = [c for c in range(20) if labels[:, c].any()]
    expected = {VOC_CLASSES[c]: reference_ap(probs[:, c].tolist(), labels[:, c].tolist()) for c in present}
    for name, ap in expected.items():
        assert logged[f"val/ap/{name}"] == pytest.approx(ap, abs=1e-5)
    assert logged["val/map"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-5)
    absent = [VOC_CLASSES[c] for c in range(20) if c not in present]
    assert all(f"val/ap/{name}" not in logged for name in absent)
    said = probs >= 0.4
    c = present[0]
    tp = (said[:, c] & (labels[:, c] > 0)).sum().item()
    f1 = 2 * tp / (said[:, c].sum().item() + labels[:, c].sum().item())
    assert logged[f"val/f1/{VOC_CLASSES[c]}"] == pytest.approx(f1, abs=1e-6)
    assert {"val/loss", "val/f1"} <= set(logged)


class RecordingLogger(pl.loggers.Logger):
    """Keeps every metric dict a Trainer sends to its logger (what W&B would receive)."""

    def __init__(self):
        super().__init__()
        self.metrics: list[dict] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.metrics.append(dict(metrics))


def test_fit_sends_loss_map_per_class_ap_and_f1_to_the_logger(tmp_path):
    pl.seed_everything(0)
    logger = RecordingLogger()
    trainer = tiny_trainer(tmp_path, logger=logger, max_epochs=1, limit_train_batches=2, limit_val_batches=2, log_every_n_steps=1)
    val_loader = noise_loader(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(ClassifierModule(tiny_classifier()), noise_loader(), val_loader)
    keys = set().union(*logger.metrics)
    assert {"train/loss_step", "train/loss_epoch", "val/loss", "val/map", "val/f1"} <= keys
    labels = val_loader.dataset.labels  # (8, 20) validation labels; both batches are validated
    present = [VOC_CLASSES[c] for c in range(20) if labels[:, c].any()]
    absent = [VOC_CLASSES[c] for c in range(20) if not labels[:, c].any()]
    assert {f"val/ap/{name}" for name in present} | {f"val/f1/{name}" for name in present} <= keys
    assert not any(f"val/ap/{name}" in keys for name in absent)
    assert all(0 <= value <= 1 for metrics in logger.metrics for key, value in metrics.items() if key.startswith("val/ap/"))


class RecordTrunk(pl.Callback):
    """Per training batch: (epoch, trunk in train mode?, trunk requires grad?); per epoch end: a trunk snapshot."""

    def __init__(self):
        self.batches, self.snapshots = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        trunk = module.model.trunk
        self.batches.append((trainer.current_epoch, trunk.training, any(p.requires_grad for p in trunk.parameters())))

    def on_train_epoch_end(self, trainer, module):
        self.snapshots.append({k: v.clone() for k, v in module.model.state_dict().items()})


def test_frozen_backbone_for_the_first_epoch_then_fine_tuned(tmp_path):
    pl.seed_everything(0)
    module = ClassifierModule(tiny_classifier(), freeze_backbone_epochs=1)
    initial = {k: v.clone() for k, v in module.model.state_dict().items()}
    recorder = RecordTrunk()
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, val_check_interval=1, callbacks=[recorder])  # validate between batches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, noise_loader(), noise_loader(seed=1))
    # Epoch 0: trunk frozen and in eval mode (also after the validation pass), epoch 1: trainable.
    assert {(epoch, mode, grad) for epoch, mode, grad in recorder.batches} == {(0, False, False), (1, True, True)}
    after_frozen, after_tuned = recorder.snapshots
    trunk_keys = [k for k in initial if k.startswith("trunk.")]
    bn_stats = [k for k in trunk_keys if k.endswith(("running_mean", "running_var"))]
    assert bn_stats and all(torch.equal(after_frozen[k], initial[k]) for k in trunk_keys)  # weights and BN stats
    assert not torch.equal(after_frozen["head.weight"], initial["head.weight"])
    assert not torch.equal(after_tuned["trunk.conv1.weight"], initial["trunk.conv1.weight"])
    assert not all(torch.equal(after_tuned[k], initial[k]) for k in bn_stats)


def test_frozen_trunk_stays_in_eval_mode_when_the_module_is_set_to_train():
    module = ClassifierModule(tiny_classifier())
    module.set_backbone_frozen(True)
    module.train()
    assert not module.model.trunk.training and module.model.head.training
    assert not any(p.requires_grad for p in module.model.trunk.parameters())
    module.set_backbone_frozen(False)
    assert module.model.trunk.training and all(p.requires_grad for p in module.model.trunk.parameters())


def test_trunk_trains_with_batchnorm_in_train_mode_without_freezing(tmp_path):
    pl.seed_everything(0)
    module = ClassifierModule(tiny_classifier())
    assert module.model.trunk.training  # building the classifier must not leave BatchNorm in eval mode
    initial = module.model.trunk.bn1.running_mean.clone()
    recorder = RecordTrunk()
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[recorder])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, noise_loader())
    assert recorder.batches == [(0, True, True)]
    assert not torch.equal(module.model.trunk.bn1.running_mean, initial)


def test_checkpoint_loads_in_classifier_and_frozen_encoder(trained_checkpoint):
    checkpoint = torch.load(trained_checkpoint, weights_only=False)
    config = checkpoint["classifier_config"]
    assert {k: config[k] for k in ("arch", "num_classes", "class_names")} == {"arch": "resnet18", "num_classes": 20, "class_names": list(VOC_CLASSES)}
    assert (config["activation"], config["input_size"]) == ("sigmoid", SIZE)  # multi-label, trained at 32 px
    classifier = Classifier.from_checkpoint(trained_checkpoint).eval()
    saved = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    assert all(torch.equal(classifier.state_dict()[k], v) for k, v in saved.items())

    encoder = FrozenEncoder(arch="resnet18", layer="layer4", checkpoint=str(trained_checkpoint))
    images = torch.rand(2, 3, 64, 64)
    latent = encoder(images)  # (2, 512, 2, 2)
    assert latent.shape == (2, 512, 2, 2) and encoder.out_channels == 512
    assert encoder.class_names == list(VOC_CLASSES)
    with torch.no_grad():
        assert torch.allclose(encoder.head(latent.mean(dim=(2, 3))), classifier(images), atol=1e-5)


def test_checkpoint_of_another_arch_or_class_count_is_rejected(trained_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="resnet18.*resnet50"):
        FrozenEncoder(arch="resnet50", layer="layer4", checkpoint=str(trained_checkpoint))
    # Config says 10 classes, weights have 20: a clear error naming the file, not a state_dict dump.
    checkpoint = torch.load(trained_checkpoint, weights_only=False)
    checkpoint["classifier_config"] = {"arch": "resnet18", "num_classes": 10, "class_names": [str(i) for i in range(10)]}
    bad = tmp_path / "ten_classes.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(ValueError, match="ten_classes.ckpt"):
        Classifier.from_checkpoint(bad)


def test_checkpoint_without_trainer_has_the_same_format(tmp_path):
    module = ClassifierModule(tiny_classifier(num_classes=5))
    path = save_untrained_checkpoint(module, tmp_path / "five.ckpt")
    restored = Classifier.from_checkpoint(path)
    assert restored.num_classes == 5 and restored.class_names == [f"class{i}" for i in range(5)]
