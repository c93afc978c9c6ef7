"""Issue 22 end to end: train a debug decoder, `pv export` it, explain with the folder in a fresh process
(same PV maps as the .ckpt), refuse it with another classifier, render its model card, push it (upload mocked)."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pv.cli import main
from pv.models import Classifier
from tests.models.test_hub import assert_no_pickle

REPO = Path(__file__).resolve().parents[1]
DEBUG = REPO / "configs" / "debug" / "decoder.yaml"
FAST = ["--image-size", "64", "--batch-size", "2", "--device", "cpu", "--methods", "pv,gradcam"]


def fresh_env(tmp: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp / "hf"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """Classifiers A and B (random ResNet-18s), held-out images, a debug decoder trained by pv fit on A's
    layer4, and its export with those images."""
    root = tmp_path_factory.mktemp("run")
    paths = {"root": root, "images": root / "images"}
    for seed, name in ((0, "A"), (1, "B")):
        torch.manual_seed(seed)
        model = Classifier("resnet18", num_classes=4, weights=None, class_names=["cat", "dog", "car", "tree"], input_size=64)
        paths[name] = root / f"{name}.ckpt"
        torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()}, "classifier_config": model.config}, paths[name])
    rng = np.random.default_rng(0)
    paths["images"].mkdir()
    for i in range(4):
        pixels = (rng.random((72, 88, 3)) * 255).astype(np.uint8)
        pixels[12:52, 16:60] = (255 * (i % 2), 180, 60 * i)
        Image.fromarray(pixels).save(paths["images"] / f"photo{i}.png")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["fit", "--config", str(DEBUG), "--trainer.default_root_dir", str(root / "decoder"), "--trainer.enable_progress_bar=false",
                     "--model.init_args.encoder.init_args.checkpoint", str(paths["A"])]) == 0  # fmt: skip
        (paths["decoder"],) = (root / "decoder" / "checkpoints").glob("*.ckpt")
        paths["shared"] = root / "shared"
        assert main(["export", "--decoder", str(paths["decoder"]), "--images", str(paths["images"]), "--out", str(paths["shared"])]) == 0
    finally:
        torch.set_num_threads(threads)
    return paths


def maps_of(out: Path) -> dict[str, dict]:
    return {path.name: torch.load(path, weights_only=True) for path in sorted((out / "maps").glob("*.pt"))}


def max_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for name, record in a.items():
        other = b[name]
        assert record["classes"].tolist() == other["classes"].tolist(), name
        for key in ("maps", "raw"):  # by method: pv's Grad-CAM mask, Grad-CAM
            for method, tensor in record[key].items():
                worst = max(worst, float((tensor - other[key][method]).abs().max()))
        for key in ("reconstruction", "probabilities"):
            worst = max(worst, float((record[key] - other[key]).abs().max()))
    return worst


def test_a_shared_decoder_gives_the_ckpts_pv_maps_in_a_fresh_process(run, tmp_path):
    assert {p.name for p in run["shared"].iterdir()} == {"model.safetensors", "config.json", "README.md", "reconstructions.png"}
    assert_no_pickle(run["shared"])
    images = ["--images", str(run["images"])]
    assert main(["explain", "--classifier", str(run["A"]), "--decoder", str(run["decoder"]), *images, "--out", str(tmp_path / "ckpt"), *FAST]) == 0
    command = [sys.executable, "-m", "pv.cli", "explain", "--classifier", str(run["A"]), "--decoder", str(run["shared"]), *images,
               "--out", str(tmp_path / "folder"), *FAST]  # fmt: skip
    result = subprocess.run(command, env=fresh_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from_ckpt, from_folder = maps_of(tmp_path / "ckpt"), maps_of(tmp_path / "folder")
    assert len(from_ckpt) == 4 and from_ckpt.keys() == from_folder.keys()
    assert max_difference(from_ckpt, from_folder) <= 1e-6
    # the classifier shared the same way: the pair of folders gives the same maps again
    assert main(["export", "--classifier", str(run["A"]), "--out", str(tmp_path / "classifier")]) == 0
    assert_no_pickle(tmp_path / "classifier")
    assert main(["explain", "--classifier", str(tmp_path / "classifier"), "--decoder", str(run["shared"]), *images, "--out", str(tmp_path / "both"), *FAST]) == 0
    assert max_difference(from_ckpt, maps_of(tmp_path / "both")) <= 1e-6


def test_a_folder_exported_for_classifier_a_is_refused_with_classifier_b(run, tmp_path, capsys):
    for decoder in (run["decoder"], run["shared"]):  # the same check as for the .ckpt
        status = main(["explain", "--classifier", str(run["B"]), "--decoder", str(decoder), "--images", str(run["images"]),
                       "--out", str(tmp_path / decoder.name), *FAST])  # fmt: skip
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1
        assert f"decoder {decoder} was trained to invert resnet18 layer4" in err and f"classifier {run['B']}" in err


def card_numbers(card: str) -> tuple[float, float, float]:
    row = re.search(r"\| ([\d.]+) \| ([\d.]+) \| ([\d.]+)% \(\d+ of \d+\) \|", card)
    assert row, card
    return float(row.group(1)), float(row.group(2)), float(row.group(3)) / 100


def test_the_model_card_renders_with_the_runs_numbers(run, tmp_path):
    import markdown
    from huggingface_hub import ModelCard

    from pv.models.checkpoint import training_data

    folder = run["shared"]
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "pv" and card.data.to_dict()["pv_kind"] == "decoder"
    html = markdown.markdown(card.text, extensions=["tables", "fenced_code"])
    (tmp_path / "card.html").write_text(html)
    assert html.count("<table>") == 4 and '<img alt="Held-out images (top row)' in html and 'src="reconstructions.png"' in html
    config = json.loads((folder / "config.json").read_text())
    fingerprint = torch.load(run["decoder"], weights_only=False)["encoder_fingerprint"]["params_sha256"]
    assert config["pv"]["encoder_fingerprint"]["params_sha256"] == fingerprint and f"<code>{fingerprint}</code>" in html
    record = training_data(run["decoder"])
    assert f"<td>{record['n_images']}</td>" in html and f"<code>{record['files_sha256']}</code>" in html
    assert "<td>0.2, 0.4, 0.4 (<code>pv.losses.PerceptionLoss</code>" in html and "<td>1 (2 optimisation steps)</td>" in html
    # the held-out numbers are what pv evaluate-explanations measures for the same decoder, classifier and images
    assert main(["evaluate-explanations", "--classifier", str(run["A"]), "--decoder", str(run["decoder"]), "--images", str(run["images"]),
                 "--out", str(tmp_path / "evaluate"), "--image-size", "64", "--device", "cpu"]) == 0  # fmt: skip
    with (tmp_path / "evaluate" / "index.csv").open() as handle:
        measured = list(csv.DictReader(handle))
    ssim, psnr, agreement = card_numbers(card.text)
    assert ssim == pytest.approx(np.mean([float(r["ssim"]) for r in measured]), abs=1e-4)
    assert psnr == pytest.approx(np.mean([float(r["psnr"]) for r in measured]), abs=1e-2)
    assert agreement == pytest.approx(np.mean([float(r["top1_agreement"]) for r in measured]), abs=1e-3)
    assert config["pv"]["held_out"]["images"] == 4 == len(measured)
    # the figure: held-out images on top, their reconstructions below, one column per image
    figure = np.asarray(Image.open(folder / "reconstructions.png").convert("RGB"))
    height, width, _ = figure.shape
    assert width > 1.5 * height and figure.std() > 10


def test_push_uploads_the_exported_folder_as_it_is(run, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    uploads = []

    class Repo:
        repo_id = "someone/pv-debug-decoder"

    def create_repo(self, repo_id, private=False, exist_ok=False, **kwargs):
        uploads.append(("create", repo_id, private, exist_ok, self.token))
        return Repo()

    def upload_folder(self, repo_id, folder_path, repo_type=None, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        uploads.append(("upload", repo_id, repo_type, Path(folder_path), files))
        return "https://huggingface.co/someone/pv-debug-decoder/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    out = tmp_path / "pushed"
    arguments = ["export", "--decoder", str(run["decoder"]), "--images", str(run["images"]), "--out", str(out), "--push", "someone/pv-debug-decoder"]
    assert main(arguments) == 0
    assert uploads[0] == ("create", "someone/pv-debug-decoder", False, True, "hf_test_token")
    _, repo, kind, folder, files = uploads[1]
    assert (repo, kind, folder) == ("someone/pv-debug-decoder", "model", out)
    assert files == {p.name: p.read_bytes() for p in out.iterdir()} and set(files) == {"model.safetensors", "config.json", "README.md", "reconstructions.png"}
    assert "--decoder someone/pv-debug-decoder" in files["README.md"].decode()  # the card tells how to use it from the Hub
    assert "Pushed" in capsys.readouterr().out
    # no token: refused before any work, in one line
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert main([*arguments[:-4], "--out", str(tmp_path / "not-written"), "--push", "someone/pv-debug-decoder"]) == 2
    err = capsys.readouterr().err
    assert "set HF_TOKEN" in err and err.count("\n") == 1 and not (tmp_path / "not-written").exists()
    # an existing folder is never overwritten
    assert main(["export", "--decoder", str(run["decoder"]), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow  # a second fresh process; tests/models/test_hub.py checks the same message in-process
def test_an_offline_hub_id_names_the_id_and_how_to_download_it(run, tmp_path):
    command = [sys.executable, "-m", "pv.cli", "explain", "--classifier", str(run["A"]), "--decoder", "someone/pv-debug-decoder",
               "--images", str(run["images"]), "--out", str(tmp_path / "out"), *FAST]  # fmt: skip
    result = subprocess.run(command, env=fresh_env(tmp_path) | {"HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pv explain: error: someone/pv-debug-decoder is not a file or folder here")
    assert "hf download someone/pv-debug-decoder --local-dir DIR" in last
