"""pv explain / pv featvis / pv evaluate-explanations end to end, and their errors."""
from __future__ import annotations

import csv
import os
import re
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pv.cli import main as pv_main
from pv.commands import evaluate, explain, featvis
from pv.commands.common import output_name, training_data_label
from pv.explain import SALIENCY, Saliency
from pv.models import Classifier, Decoder

FAST = ["--image-size", "64", "--ig-steps", "4", "--lime-samples", "8", "--lime-segments", "6", "--batch-size", "2"]
explain_main, featvis_main, evaluate_main = explain.main, featvis.main, evaluate.main


def linked_files(index: Path) -> list[Path]:
    return [index.parent / urllib.parse.unquote(href) for href in re.findall(r'href="([^"]+)"', index.read_text())]


def save_decoder(path: Path, decoder: Decoder, encoder: dict | None = None, **extra) -> Path:
    encoder = encoder or {"arch": "resnet18", "layer": "layer4", "weights": None, "checkpoint": None}
    state = {"decoder." + k: v for k, v in decoder.state_dict().items()}
    torch.save({"state_dict": state, "decoder_config": decoder.config, "encoder_config": encoder, **extra}, path)
    return path


def save_classifier(path: Path, classifier: Classifier) -> Path:
    torch.save({"state_dict": {"model." + k: v for k, v in classifier.state_dict().items()}, "classifier_config": classifier.config}, path)
    return path


def one_line_error(capsys, command: str = "explain") -> str:
    """The error printed by `pv`: exactly one line and no traceback; a progress bar may come first."""
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.startswith(f"pv {command}: error:")]
    assert len(lines) == 1 and "Traceback" not in error, error
    return lines[0]


def test_explain_writes_figures_maps_and_index(checkpoints, image_folder, tmp_path, capsys):
    (image_folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="broken.jpg"):
        code = explain_main([
            "--classifier", str(checkpoints["classifier"]), "--decoder", str(checkpoints["decoder"]),
            "--images", str(image_folder), "--methods", "pv,cpv,gradcam,ig,lime", "--topk", "2", "--out", str(out), *FAST,
        ])
    assert code == 0
    figures = sorted(p.relative_to(out / "figures").as_posix() for p in (out / "figures").rglob("*.png"))
    assert figures == ["a.png.png", "b.jpg.png", "sub/c.png.png"]  # the relative path and extension are kept
    for name in figures:
        with Image.open(out / "figures" / name) as image:
            # 7 columns (input | Grad-CAM | reconstruction | PV | class PV | IG | LIME) of 200 px panels, one row per
            # top-k class, a colour bar and a note under them
            assert image.width == 7 * 200 and 2 * 200 <= image.height < 3 * 200
    saved = torch.load(out / "maps" / "a.png.pt")
    assert saved["class_names"][0] in ("cat", "dog", "car", "tree") and saved["probabilities"].shape == (2,)
    assert set(saved["maps"]) == {"gradcam", "ig", "lime"}
    assert saved["maps"]["ig"].shape == (2, 1, 64, 64) and saved["raw"]["ig"].shape == (2, 3, 64, 64)
    assert saved["raw"]["gradcam"].shape == (2, 1, 2, 2) and saved["reconstruction"].shape == (3, 64, 64)
    links = linked_files(out / "index.html")
    assert {p.relative_to(out / "figures").as_posix() for p in links if p.suffix == ".png"} == set(figures)
    assert all(p.is_file() for p in links)
    assert "Wrote 3 figure(s)" in capsys.readouterr().out


def test_each_maps_file_holds_only_its_own_image(checkpoints, image_folder, tmp_path):
    """Issue 12.7: per-image tensors were views of the batch, so every .pt held the whole batch."""
    out = tmp_path / "out"
    assert explain_main(["--classifier", str(checkpoints["classifier"]), "--images", str(image_folder), "--methods", "gradcam",
                         "--topk", "2", "--out", str(out), *FAST, "--batch-size", "3"]) == 0  # fmt: skip
    for path in (out / "maps").rglob("*.pt"):
        saved = torch.load(path)
        for tensor in [saved["probabilities"], saved["classes"], *saved["maps"].values(), *saved["raw"].values()]:
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


def write_photo(path: Path | bytes, seed: int) -> None:
    array = (np.random.default_rng(seed).random((36, 40, 3)) * 255).astype(np.uint8)
    buffer = Path(os.fsdecode(path))
    Image.fromarray(array).save(buffer, format="PNG" if buffer.suffix.lower() == ".png" else "JPEG")


def test_output_names_are_unique_and_printed_count_is_on_disk(checkpoints, tmp_path, capsys):
    """Issue 12.3: `cat.jpg`/`cat.png` and `a b.jpg`/`a_b.jpg` shared one figure and one maps file."""
    folder = tmp_path / "images"
    folder.mkdir()
    names = ["cat.jpg", "cat.png", "a b.jpg", "a_b.jpg", "100%.png", "a%25.png"]
    for seed, name in enumerate(names):
        write_photo(folder / name, seed)
    out = tmp_path / "out"
    assert explain_main(["--classifier", str(checkpoints["classifier"]), "--images", str(folder), "--methods", "gradcam",
                         "--topk", "1", "--out", str(out), *FAST]) == 0  # fmt: skip
    figures = list((out / "figures").rglob("*.png"))
    assert len(figures) == len(list((out / "maps").rglob("*.pt"))) == len(names)
    assert f"Wrote {len(names)} figure(s)" in capsys.readouterr().out
    linked = [p for p in linked_files(out / "index.html") if p.suffix == ".png"]
    assert len(set(linked)) == len(names) and all(p.is_file() for p in linked)
    assert torch.load(out / "maps" / "cat.jpg.pt")["image"].endswith("cat.jpg")
    # stable: the same input gives the same name
    assert output_name(folder / "sub" / "a b.jpg", folder) == "sub/a b.jpg" == output_name(folder / "sub" / "a b.jpg", folder)


def test_no_file_name_stops_a_run(checkpoints, tmp_path, capsys):
    """Issue 12.4: a mathtext name raised a parse error and a non-UTF-8 name a TypeError; index.html was never written."""
    folder = tmp_path / "images"
    folder.mkdir()
    write_photo(folder / r"$\undefinedcmd$.png", 0)
    write_photo(folder / "x_{y}^2 $a.png", 1)
    write_photo(os.fsencode(folder) + b"/caf\xe9.png", 2)  # Latin-1 bytes: not UTF-8
    out = tmp_path / "out"
    assert explain_main(["--classifier", str(checkpoints["classifier"]), "--images", str(folder), "--methods", "gradcam",
                         "--topk", "1", "--out", str(out), *FAST]) == 0  # fmt: skip
    assert len(list((out / "figures").rglob("*.png"))) == 3
    page = (out / "index.html").read_text(encoding="utf-8")
    assert r"$\undefinedcmd$.png" in page and r"caf\xe9.png" in page
    assert all(p.is_file() for p in linked_files(out / "index.html"))


class CentreSaliency(Saliency):
    """A toy method for the test only: the image centre is salient, scaled by `strength`."""

    title = "Toy centre"

    def __init__(self, model, *, strength: float = 1.0, **options):
        super().__init__(model, **options)
        self.strength = strength

    def attribute(self, images: torch.Tensor, targets) -> torch.Tensor:
        b, _, h, w = images.shape
        y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        return (self.strength * (1 - (x**2 + y**2).sqrt()).clamp_min(0)).expand(b, 1, h, w).clone()  # (B, 1, H, W)


def test_a_saliency_method_registered_at_runtime_runs_through_explain(checkpoints, image_folder, tmp_path, monkeypatch):
    """Issue 9.3: adding a method = one class + one SALIENCY entry; no command table to edit."""
    monkeypatch.setitem(SALIENCY, "toy", CentreSaliency)
    out = tmp_path / "out"
    assert pv_main(["explain", "--classifier", str(checkpoints["classifier"]), "--images", str(image_folder),
                    "--methods", "toy", "--topk", "1", "--out", str(out), *FAST]) == 0  # fmt: skip
    saved = torch.load(out / "maps" / "a.png.pt")
    maps = saved["maps"]["toy"]  # (1, 1, 64, 64)
    assert maps.shape == (1, 1, 64, 64) and maps[0, 0, 32, 32] > 0.9 and maps[0, 0, 0, 0] == 0
    assert "Toy centre" in (out / "index.html").read_text()
    # and as the saliency PV masks with
    assert explain_main(["--classifier", str(checkpoints["classifier"]), "--decoder", str(checkpoints["decoder"]), "--images",
                         str(image_folder), "--methods", "pv", "--pv-saliency", "toy", "--topk", "1", "--out", str(tmp_path / "o2"), *FAST]) == 0
    assert set(torch.load(tmp_path / "o2" / "maps" / "a.png.pt")["maps"]) == {"toy"}


def test_classifier_facts_are_the_defaults(image_folder, tmp_path, capsys):
    """Issue 11.2: explain defaulted to softmax and 224 px for a pv classifier trained multi-label at 48 px."""
    torch.manual_seed(0)
    classifier = Classifier("resnet18", num_classes=4, weights=None, class_names=["a", "b", "c", "d"], input_size=48).eval()
    assert classifier.activation == "sigmoid"
    path = save_classifier(tmp_path / "cls48.ckpt", classifier)
    out = tmp_path / "out"
    assert explain_main(["--classifier", str(path), "--images", str(image_folder), "--methods", "gradcam", "--topk", "4", "--out", str(out)]) == 0
    saved = torch.load(out / "maps" / "a.png.pt")
    assert saved["activation"] == "sigmoid" and saved["maps"]["gradcam"].shape == (4, 1, 48, 48)
    assert saved["probabilities"].sum() > 1.01 or saved["probabilities"].sum() < 0.99  # sigmoid scores need not sum to 1
    assert "sigmoid" in (out / "index.html").read_text()
    # the flag still wins
    assert explain_main(["--classifier", str(path), "--images", str(image_folder), "--methods", "gradcam", "--topk", "4",
                         "--activation", "softmax", "--out", str(tmp_path / "soft")]) == 0  # fmt: skip
    torch.testing.assert_close(torch.load(tmp_path / "soft" / "maps" / "a.png.pt")["probabilities"].sum(), torch.tensor(1.0))


def test_help_shows_every_default(capsys):
    """Issue 11.2: --help shows every default (ArgumentDefaultsHelpFormatter)."""
    for module in (explain, featvis, evaluate):
        parser = module.parser()
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, "==SUPPRESS==") and action.dest != "help":
                assert f"(default: {action.default})" in text, (module.__name__, action.dest)
    assert "default: the size the classifier was trained at" in " ".join(explain.parser().format_help().split())


def test_several_decoders_side_by_side_titled_by_their_training_data(checkpoints, image_folder, tmp_path, small_decoder):
    """Issue 10.14: --decoder is repeatable; each decoder's columns are titled with the data it was trained on."""
    data = {"class_path": "pv.data.ImageFolderDataModule", "init_args": {"root": "/data/imagenet_subset", "subset_size": 8000}}
    other = save_decoder(tmp_path / "imagenet.ckpt", small_decoder, data_config=data)
    assert training_data_label(other) == "ImageFolder imagenet_subset (8000 images)"
    assert training_data_label(checkpoints["decoder"]) == "dec.ckpt"  # nothing recorded: the file name
    out = tmp_path / "out"
    assert explain_main(["--classifier", str(checkpoints["classifier"]), "--decoder", str(checkpoints["decoder"]), "--decoder", str(other),
                         "--images", str(image_folder), "--methods", "pv", "--topk", "1", "--out", str(out), *FAST]) == 0  # fmt: skip
    with Image.open(out / "figures" / "a.png.png") as image:
        assert image.width == 6 * 200  # input | Grad-CAM | (reconstruction | PV) per decoder
    saved = torch.load(out / "maps" / "a.png.pt")
    assert set(saved["reconstructions"]) == {"dec.ckpt", "ImageFolder imagenet_subset (8000 images)"}
    assert "reconstruction (ImageFolder imagenet_subset (8000 images))" in (out / "index.html").read_text()


def test_decoder_of_another_encoder_is_refused_unless_allowed(checkpoints, image_folder, tmp_path, small_decoder, capsys):
    """Issue 10.1 (command part): one line naming both; --allow-encoder-mismatch turns it into a warning."""
    from pv.models.fingerprint import encoder_fingerprint

    torch.manual_seed(5)
    stranger = Classifier("resnet18", num_classes=4, weights=None).eval()
    encoder = {"arch": "resnet18", "layer": "layer4", "weights": None, "checkpoint": None,
               "fingerprint": encoder_fingerprint(stranger, arch="resnet18", layer="layer4")}  # fmt: skip
    decoder = save_decoder(tmp_path / "stranger.ckpt", small_decoder, encoder)
    for command in ("explain", "evaluate-explanations"):
        arguments = [command, "--classifier", str(checkpoints["classifier"]), "--decoder", str(decoder), "--images", str(image_folder),
                     "--methods", "pv", "--out", str(tmp_path / command), *FAST]  # fmt: skip
        assert pv_main(arguments) == 2
        line = one_line_error(capsys, command)
        assert "stranger.ckpt" in line and "cls.ckpt" in line and "--allow-encoder-mismatch" in line
        assert not list((tmp_path / command).rglob("*.png"))
        with pytest.warns(UserWarning, match="allowed by --allow-encoder-mismatch"):
            fast = ["--topk", "1"] if command == "explain" else ["--steps", "2"]
            assert pv_main([*arguments, "--allow-encoder-mismatch", *fast]) == 0


def test_featvis_writes_images(checkpoints, tmp_path, capsys):
    out = tmp_path / "fv"
    assert featvis_main(["--model", str(checkpoints["classifier"]), "--layer", "layer3", "--channel", "12,3", "--size", "32",
                         "--octaves", "2", "--steps", "2", "--out", str(out)]) == 0
    assert {p.name for p in out.glob("*.png")} == {"featvis_layer3_channel_12.png", "featvis_layer3_channel_3.png", "featvis_grid.png"}
    assert all(p.is_file() for p in linked_files(out / "index.html"))
    assert "Wrote 2 image(s)" in capsys.readouterr().out


def test_featvis_names_the_default_layer(checkpoints, tmp_path, capsys):
    """Issue 11.7: featvis printed "Wrote 1 images" and called the default layer "last layer"."""
    out = tmp_path / "fv"
    assert featvis_main(["--model", str(checkpoints["classifier"]), "--size", "32", "--octaves", "1", "--steps", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Wrote 1 image(s) (layer4 (mean))" in printed and "last layer" not in printed
    assert (out / "featvis_layer4_mean.png").is_file() and "layer4 (mean)" in (out / "index.html").read_text()


def test_evaluate_writes_tables(checkpoints, image_folder, tmp_path):
    out = tmp_path / "ev"
    assert evaluate_main(["--classifier", str(checkpoints["classifier"]), "--decoder", str(checkpoints["decoder"]), "--images",
                          str(image_folder), "--methods", "gradcam,ig,pv", "--steps", "4", "--out", str(out), *FAST]) == 0
    with (out / "saliency_metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["gradcam", "ig", "pv"] and all(0 <= float(r["deletion_auc"]) <= 1 for r in rows)
    with (out / "decoder_metrics.csv").open() as handle:
        (decoder,) = list(csv.DictReader(handle))
    assert {"ssim", "psnr", "latent_error", "top1_agreement"} <= set(decoder) and decoder["images"] == "3"
    assert "| gradcam |" in (out / "metrics.md").read_text()
    page = (out / "index.html").read_text()
    assert "<h2>Decoder</h2>" in page and "<th>ssim</th>" in page  # issue 11.7: the decoder table is on the page too
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
        (["--methods", "gradcam", "--topk", "x"], "argument --topk: invalid positive integer value: 'x'"),
        (["--methods", "gradcam", "--image-size", "7"], "--image-size 7 gives a 1x1 map at layer 'layer4': use at least 64 px"),
        (["--methods", "gradcam", "--image-size", "0"], "argument --image-size: must be >= 1, got 0"),
        (["--methods", "gradcam", "--image-size", "-3"], "argument --image-size: must be >= 1, got -3"),
        (["--methods", "gradcam", "--alpha", "2"], "argument --alpha: must be in [0, 1]"),
        (["--methods", "gradcam", "--out", "{a_file}"], "is a file, not a folder"),
        (["--methods", "gradcam", "--classifier", "{missing_ckpt}"], "nope.ckpt does not exist"),
    ],
)
def test_explain_errors_in_one_line(arguments, message, checkpoints, image_folder, tmp_path, capsys):
    folders = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "unreadable": tmp_path / "unreadable"}
    folders["empty"].mkdir()
    folders["unreadable"].mkdir()
    (folders["unreadable"] / "x.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "a_file").write_text("x")
    values = {**{k: str(v) for k, v in folders.items()}, "bad_decoder": str(checkpoints["bad_decoder"]),
              "a_file": str(tmp_path / "a_file"), "missing_ckpt": str(tmp_path / "nope.ckpt")}  # fmt: skip
    arguments = [a.format(**values) for a in arguments]
    if "--images" not in arguments:
        arguments += ["--images", str(image_folder)]
    base = ["explain", "--classifier", str(checkpoints["classifier"]), "--out", str(tmp_path / "o"), *FAST]
    with pytest.warns(UserWarning) if "unreadable" in str(arguments) else _nothing():
        code = pv_main([*base, *arguments])
    assert code == 2
    assert message in one_line_error(capsys)


def test_output_folder_is_checked_before_any_work(checkpoints, image_folder, tmp_path, capsys, monkeypatch):
    """Issue 12.6: a bad --out was found only after the first batch, with a raw traceback."""
    import pv.commands.common

    calls = []
    monkeypatch.setattr(pv.commands.common, "classifier_from_arguments", lambda *a: calls.append(a))
    monkeypatch.setattr(explain, "classifier_from_arguments", lambda *a: calls.append(a))
    (tmp_path / "a_file").write_text("x")
    for out, message in ((tmp_path / "a_file", "is a file, not a folder"), (tmp_path / "a_file" / "sub", "cannot be written: Not a directory")):
        code = pv_main(["explain", "--classifier", str(checkpoints["classifier"]), "--images", str(image_folder), "--methods", "gradcam",
                        "--out", str(out), *FAST])  # fmt: skip
        assert code == 2 and not calls
        line = one_line_error(capsys)
        assert f"--out {out}" in line and message in line


def test_an_unexpected_error_keeps_its_traceback(checkpoints, image_folder, tmp_path, monkeypatch):
    """Issue 9.6: only user errors are one line; a bug (here a RuntimeError inside a method) propagates."""

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(SALIENCY["gradcam"], "attribute_multi", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        pv_main(["explain", "--classifier", str(checkpoints["classifier"]), "--images", str(image_folder), "--methods", "gradcam",
                 "--out", str(tmp_path / "o"), *FAST])  # fmt: skip


def test_help_for_every_command(capsys):
    for command in (explain_main, featvis_main, evaluate_main):
        with pytest.raises(SystemExit) as exit_info:
            command(["--help"])
        assert exit_info.value.code == 0
    assert "--decoder" in capsys.readouterr().out


def test_colour_bar_and_score_kind_on_the_figure(tmp_path):
    """Issue 11.5: explain figures had no colour bar and did not say which scores they show."""
    from pv.explain.figures import ColorBar, Row, grid_figure

    rows = [Row("cat (sigmoid 0.72)", [torch.full((3, 32, 32), 0.5)] * 2)]
    plain = np.asarray(Image.open(grid_figure(rows, ["input", "Grad-CAM"], tmp_path / "plain.png")).convert("RGB"))
    with_bar = np.asarray(Image.open(grid_figure(rows, ["input", "Grad-CAM"], tmp_path / "bar.png", colorbar=ColorBar("jet"))).convert("RGB"))
    assert with_bar.shape[0] > plain.shape[0]
    bottom = with_bar[plain.shape[0] - 20 :].reshape(-1, 3).astype(int)
    dark_blue = ((bottom[:, 2] > 100) & (bottom[:, 0] < 30) & (bottom[:, 1] < 30)).any()  # jet at 0
    dark_red = ((bottom[:, 0] > 100) & (bottom[:, 2] < 30) & (bottom[:, 1] < 30)).any()  # jet at 1
    assert dark_blue and dark_red


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
