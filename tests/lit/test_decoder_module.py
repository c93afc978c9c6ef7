import pytest
import pytorch_lightning as pl
import torch

from pv import DecoderModule
from pv.losses import PerceptionLoss
from pv.models import Decoder, FrozenEncoder


def make_module(**kwargs) -> DecoderModule:
    torch.manual_seed(0)
    encoder = FrozenEncoder("resnet18", "layer4", weights=None)
    return DecoderModule(encoder, Decoder(512, (16, 16, 8, 8, 8)), **kwargs)


def test_forward_reconstructs_input_shape():
    module = make_module()
    assert module(torch.rand(2, 3, 64, 64)).shape == (2, 3, 64, 64)


def test_mismatched_decoder_channels_are_rejected():
    with pytest.raises(ValueError, match="in_channels=256.*512"):
        DecoderModule(FrozenEncoder("resnet18", "layer4", weights=None), Decoder(256, (8,)))


def test_wrong_image_size_multiple_is_explained():
    module = make_module()
    module.decoder = Decoder(512, (8, 8))  # x4 only
    with pytest.raises(ValueError, match="upsamples x4"):
        module.training_step({"image": torch.rand(1, 3, 64, 64)}, 0)


def test_training_steps_lower_loss_and_leave_encoder_untouched():
    module = make_module(loss=PerceptionLoss((0.2, 0.4, 0.4)))
    batch = {"image": torch.rand(4, 3, 64, 64)}
    encoder_state = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    optimizer = module.configure_optimizers()
    module.train()
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1  # the SSIM term is -sum_c SSIM_c, so losses can be negative
    assert not module.encoder.training
    for key, value in module.encoder.state_dict().items():
        assert torch.equal(value, encoder_state[key]), f"encoder {key} changed"
    assert {p for p in optimizer.param_groups[0]["params"]} == set(module.decoder.parameters())


def test_trainer_fit_keeps_bn_stats_and_logs_metrics(tmp_path):
    from pv.data import QuickstartDataModule

    module = make_module()
    before = {k: v.clone() for k, v in module.encoder.state_dict().items() if "running" in k}
    trainer = pl.Trainer(max_steps=3, limit_val_batches=1, logger=pl.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, accelerator="cpu")
    trainer.fit(module, QuickstartDataModule(image_size=64, batch_size=2, repeats=1, train_images=("astronaut", "coffee"), val_images=("rocket",)))
    for key, value in module.encoder.state_dict().items():
        if "running" in key:
            assert torch.equal(value, before[key]), key
    logged = set(trainer.logged_metrics)
    assert {"train/loss_step", "train/mse_step", "val/loss", "val/ssim", "val/psnr", "val/dsim"} <= logged


def test_sync_batchnorm_conversion_keeps_encoder_frozen():
    """Multi-GPU runs use --trainer.sync_batchnorm=true: decoder BN syncs, the encoder stays frozen in eval."""
    module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(make_module())
    module.train()
    synced = [m for m in module.decoder.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(synced) == 5 and all(m.training for m in synced)
    assert not any(m.training for m in module.encoder.modules())
    assert not any(p.requires_grad for p in module.encoder.parameters())


def test_loss_gets_the_encoder_explicitly_and_it_is_registered_once():
    module = make_module()
    assert not any(name.startswith("loss.") for name, _ in module.named_parameters())
    assert not hasattr(module.loss, "_encoder")
    assert sum(1 for m in module.modules() if isinstance(m, FrozenEncoder)) == 1


def test_validation_and_test_metrics_are_separate_objects():
    module = make_module()
    assert module.metrics["val"] is not module.metrics["test"]
    assert module.metrics["val"]["ssim"] is not module.metrics["test"]["ssim"]


def test_checkpoint_records_the_encoder_fingerprint():
    module = make_module()
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["encoder_fingerprint"] == module.encoder.fingerprint()
    assert checkpoint["encoder_fingerprint"]["arch"] == "resnet18" and len(checkpoint["encoder_fingerprint"]["params_sha256"]) == 64


def test_bf16_mixed_and_channels_last_train_on_cpu(tmp_path):
    from pv.data import QuickstartDataModule

    module = make_module(channels_last="auto")
    trainer = pl.Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False, precision="bf16-mixed",
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, QuickstartDataModule(image_size=64, batch_size=2, repeats=1, train_images=("astronaut", "coffee"), val_images=("rocket",)))
    assert module.channels_last is True
    assert module.decoder.to_rgb.weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.global_step == 2 and torch.isfinite(trainer.logged_metrics["val/loss"])


def test_onecycle_schedule_warms_up_then_anneals_per_step():
    module = DecoderModule(FrozenEncoder("resnet18", "layer4", weights=None), Decoder(512, (8, 8, 8, 8, 8)), lr_schedule="onecycle",
                           optimizer=lambda p: torch.optim.Adam(p, lr=0.01))
    data = [{"image": torch.rand(2, 3, 64, 64)} for _ in range(10)]
    rates = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", callbacks=[Record()], num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    peak = rates.index(max(rates))
    assert len(rates) == 20 and rates[0] == pytest.approx(0.01 / 25) and max(rates) == pytest.approx(0.01, rel=0.05)
    assert 3 <= peak <= 8 and rates[-1] < 0.01 / 100  # 30% warm-up, then down to ~0 at the last of the 20 steps
    assert all(a <= b for a, b in zip(rates[:peak], rates[1:peak + 1])) and all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))
    with pytest.raises(ValueError, match="lr_schedule"):
        DecoderModule(FrozenEncoder("resnet18", "layer4", weights=None), Decoder(512, (8, 8, 8, 8, 8)), lr_schedule="cosine")
