"""pv explain / pv featvis / pv evaluate-explanations end to end, and their errors."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from pv.cli import main as pv_main
from pv.explain.cli import explain_main, featvis_main
from pv.explain.evaluate import main as evaluate_main

FAST = ["--image-size", "64", "--ig-steps", "4", "--lime-samples", "8", "--lime-segments", "6", "--batch-size", "2"]


def linked_files(index: Path) -> list[Path]:
    return [index.parent / href for href in re.findall(r'href="([^"]+)"', index.read_text())]


def test_explain_writes_figures_maps_and_index(checkpoints, image_folder, tmp_path):
    (image_folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="broken.jpg"):
        code = explain_main([
            "--classifier", str(checkpoints["classifier"]), "--decoder", str(checkpoints["decoder"]),
            "--images", str(image_folder), "--methods", "pv,cpv,gradcam,ig,lime", "--topk", "2", "--out", str(out), *FAST,
        ])
    assert code == 0
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["a.png", "b.png", "sub__c.png"]
    for name in figures:
        with Image.open(out / "figures" / name) as image:
            # 7 columns (input | Grad-CAM | reconstruction | PV | class PV | IG | LIME) of 200 px panels, one row per top-k class
            assert image.width == 7 * 200 and 2 * 200 <= image.height < 3 * 200
    saved = torch.load(out / "maps" / "a.pt")
    assert saved["class_names"][0] in ("cat", "dog", "car", "tree") and saved["probabilities"].shape == (2,)
    assert set(saved["maps"]) == {"gradcam", "ig", "lime"}
    assert saved["maps"]["ig"].shape == (2, 1, 64, 64) and saved["raw"]["ig"].shape == (2, 3, 64, 64)
    assert saved["raw"]["gradcam"].shape == (2, 1, 2, 2) and saved["reconstruction"].shape == (3, 64, 64)
    links = linked_files(out / "index.html")
    assert {p.name for p in links if p.suffix == ".png"} == set(figures) and all(p.is_file() for p in links)


def test_explain_any_torchvision_classifier(image_folder, tmp_path):
    code = explain_main(["--arch", "resnet18", "--weights", "none", "--images", str(image_folder), "--methods", "gradcam,gradcam++",
                         "--topk", "1", "--out", str(tmp_path / "o"), *FAST])
    assert code == 0 and len(list((tmp_path / "o" / "figures").glob("*.png"))) == 3


def test_featvis_writes_images(checkpoints, tmp_path):
    out = tmp_path / "fv"
    assert featvis_main(["--model", str(checkpoints["classifier"]), "--layer", "layer3", "--channel", "12,3", "--size", "32",
                         "--octaves", "2", "--steps", "2", "--out", str(out)]) == 0
    assert {p.name for p in out.glob("*.png")} == {"featvis_layer3_channel_12.png", "featvis_layer3_channel_3.png", "featvis_grid.png"}
    assert all(p.is_file() for p in linked_files(out / "index.html"))


def test_evaluate_writes_tables(checkpoints, image_folder, tmp_path):
    out = tmp_path / "ev"
    assert evaluate_main(["--classifier", str(checkpoints["classifier"]), "--decoder", str(checkpoints["decoder"]), "--images",
                          str(image_folder), "--methods", "gradcam,ig", "--steps", "4", "--out", str(out), *FAST]) == 0
    with (out / "saliency_metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["gradcam", "ig"] and all(0 <= float(r["deletion_auc"]) <= 1 for r in rows)
    with (out / "decoder_metrics.csv").open() as handle:
        (decoder,) = list(csv.DictReader(handle))
    assert {"ssim", "psnr", "latent_error", "top1_agreement"} <= set(decoder) and decoder["images"] == "3"
    assert "| gradcam |" in (out / "metrics.md").read_text()
    assert (out / "curves.png").is_file() and all(p.is_file() for p in linked_files(out / "index.html"))


def test_explain_real_photos(checkpoints, photo_dir, tmp_path):
    out = tmp_path / "photos"
    assert explain_main(["--classifier", str(checkpoints["classifier"]), "--decoder", str(checkpoints["decoder"]), "--images",
                         str(photo_dir), "--methods", "pv", "--topk", "1", "--out", str(out), *FAST]) == 0
    assert len(list((out / "figures").glob("*.png"))) == len(list(photo_dir.glob("*.jpg")))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--methods", "gradcam", "--images", "{empty}"], "No images found"),
        (["--methods", "gradcam", "--images", "{missing}"], "Image folder not found"),
        (["--methods", "gradcam", "--images", "{unreadable}"], "None of the 1 files"),
        (["--methods", "pv", "--decoder", "{bad_decoder}"], "decodes 256-channel latents"),
        (["--methods", "pv"], "need --decoder"),
        (["--methods", "gradcam,smoothgrad"], "--methods: unknown 'smoothgrad'"),
        (["--methods", "gradcam", "--layer", "layer9"], "valid layer names are: conv1, bn1"),
    ],
)
def test_explain_errors_in_one_line(arguments, message, checkpoints, image_folder, tmp_path, capsys):
    folders = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "unreadable": tmp_path / "unreadable"}
    folders["empty"].mkdir()
    folders["unreadable"].mkdir()
    (folders["unreadable"] / "x.png").write_bytes(b"\x89PNG broken")
    values = {**{k: str(v) for k, v in folders.items()}, "bad_decoder": str(checkpoints["bad_decoder"])}
    arguments = [a.format(**values) for a in arguments]
    if "--images" not in arguments:
        arguments += ["--images", str(image_folder)]
    with pytest.warns(UserWarning) if "unreadable" in str(arguments) else _nothing():
        code = pv_main(["explain", "--classifier", str(checkpoints["classifier"]), "--out", str(tmp_path / "o"), *FAST, *arguments])
    assert code == 2
    error = capsys.readouterr().err  # a progress bar may come first; the error is one line after it
    error_lines = [line for line in error.splitlines() if line.startswith("pv explain: error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert error.rstrip().endswith("(set PV_DEBUG=1 for the full traceback)")


def test_help_for_every_command(capsys):
    for command in (explain_main, featvis_main, evaluate_main):
        with pytest.raises(SystemExit) as exit_info:
            command(["--help"])
        assert exit_info.value.code == 0
    assert "--decoder" in capsys.readouterr().out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
