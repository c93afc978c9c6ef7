"""Whole runs in subprocesses: W&B offline logging, DDP on 2 CPU processes, resuming after SIGKILL."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
DEBUG = str(REPO / "configs" / "debug" / "decoder.yaml")


def pv_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pv.cli", "fit", "--config", DEBUG, *args]


def run_env(tmp_path: Path) -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def write_config(path: Path, trainer: dict) -> str:
    path.write_text(yaml.safe_dump({"trainer": trainer}))
    return str(path)


def test_wandb_offline_run_holds_metrics_and_images(tmp_path):
    extra = write_config(tmp_path / "wandb.yaml", {
        "max_epochs": 2, "default_root_dir": str(tmp_path), "log_every_n_steps": 1,
        "logger": {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": {"project": "pv-test", "save_dir": str(tmp_path)}},
        "callbacks": [{"class_path": "pv.lit.ReconstructionGrid", "init_args": {"num_images": 2}}],
    })
    result = subprocess.run(pv_command("--config", extra), env=run_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = next(runs[0].glob("*.wandb")).read_bytes()
    for key in (b"train/loss_step", b"val/loss", b"val/psnr", b"val/ssim", b"train/dsim_epoch"):
        assert key in records, key
    images = list((runs[0] / "files" / "media" / "images").rglob("*.png"))
    assert images, "no reconstruction grid logged to W&B"
    from PIL import Image
    import numpy as np

    pixels = np.asarray(Image.open(images[0]).convert("RGB"))
    assert pixels.min() < pixels.max() and pixels.mean() > 20, "the logged grid is blank"
    run_id = runs[0].name.rsplit("-", 1)[-1]
    assert f"id: {run_id}" in (tmp_path / "config.yaml").read_text()  # resuming with this config continues the W&B run
    assert (tmp_path / "reconstructions" / "epoch_0001.png").is_file() or list(tmp_path.rglob("epoch_0001.png"))


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_write_one_checkpoint(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    extra = write_config(tmp_path / "ddp.yaml", {
        "accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_epochs": 1,
        "default_root_dir": str(tmp_path), "log_every_n_steps": 1,
        "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}},
        "callbacks": [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"dirpath": str(checkpoints)}}],
    })
    result = subprocess.run(pv_command("--config", extra, "--data.init_args.repeats=2"), env=run_env(tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in result.stderr + result.stdout
    written = list(checkpoints.glob("*.ckpt"))
    assert len(written) == 1, written
    checkpoint = torch.load(written[0], map_location="cpu", weights_only=False)
    # 7 images x 2 repeats split over 2 ranks, batch 4 -> 2 steps per rank (not 4 as on one process)
    assert checkpoint["global_step"] == 2
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "train/loss_step" in metrics and "val/loss" in metrics


@pytest.mark.slow
def test_sigkill_then_resume_from_last_checkpoint(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    extra = write_config(tmp_path / "resume.yaml", {
        "max_epochs": 1000, "default_root_dir": str(tmp_path), "limit_val_batches": 0,
        "callbacks": [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                       "init_args": {"dirpath": str(checkpoints), "save_last": True, "every_n_train_steps": 1, "save_top_k": 1}}],
    })
    process = subprocess.Popen(pv_command("--config", extra), env=run_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = checkpoints / "last.ckpt"
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and step < 3:
        time.sleep(0.5)
        if last.is_file():
            try:
                step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
            except Exception:  # being written
                continue
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert step >= 3, "training never checkpointed"
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    result = subprocess.run(pv_command("--config", extra, "--ckpt_path", "last", f"--trainer.max_steps={killed_at + 2}"),
                            env=run_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restoring states from the checkpoint" in result.stdout + result.stderr
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == killed_at + 2


@pytest.mark.slow
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """Stop after 1 of 3 epochs, resume with the run's own config.yaml: same final weights on CPU."""
    from pv.cli import main

    common = ["--config", DEBUG, "--data.init_args.repeats=2", "--data.init_args.batch_size=3", "--trainer.limit_val_batches=0",
              "--trainer.enable_checkpointing=true"]  # fmt: skip
    assert main(["fit", *common, f"--trainer.default_root_dir={tmp_path / 'a'}", "--trainer.max_epochs=3"]) == 0
    assert main(["fit", *common, f"--trainer.default_root_dir={tmp_path / 'b'}", "--trainer.max_epochs=1"]) == 0
    assert main(["fit", "--config", str(tmp_path / "b" / "config.yaml"), "--ckpt_path", "last", "--trainer.max_epochs=3"]) == 0
    final = [max((torch.load(p, weights_only=False) for p in (tmp_path / run).rglob("*.ckpt")), key=lambda c: c["global_step"])
             for run in ("a", "b")]  # fmt: skip
    assert final[0]["epoch"] == final[1]["epoch"] == 2 and final[0]["global_step"] == final[1]["global_step"]
    for key, value in final[0]["state_dict"].items():
        assert torch.equal(value, final[1]["state_dict"][key]), key
