"""--precision auto|32|bf16 on pv explain / analyze / featvis / evaluate-explanations (issue 13.1), and the
saliency options the commands leave to the methods (memory-sized batches, IG's own steps; issue 13.4)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pv.models.precision as precision_module
from pv.cli import main as pv_main
from pv.commands import analyze, evaluate, explain, featvis
from pv.commands.common import make_saliency, saliency_options
from pv.explain.ig import IntegratedGradients
from pv.lit.predict import to_cpu
from pv.models import Classifier, Decoder
from pv.models.fingerprint import encoder_fingerprint

FAST = ["--image-size", "64", "--batch-size", "2", "--ig-steps", "4"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A random resnet18 classifier (4 classes) and a narrow decoder of its layer4, saved as `pv fit` saves them."""
    root = tmp_path_factory.mktemp("precision")
    torch.manual_seed(0)
    classifier = Classifier("resnet18", num_classes=4, weights=None, class_names=["cat", "dog", "car", "tree"]).eval()
    decoder = Decoder(512, (16, 8, 8, 8, 8)).eval()
    paths = {"classifier": root / "cls.ckpt", "decoder": root / "dec.ckpt"}
    torch.save({"state_dict": {"model." + k: v for k, v in classifier.state_dict().items()}, "classifier_config": classifier.config}, paths["classifier"])
    encoder = {"arch": "resnet18", "layer": "layer4", "weights": None, "checkpoint": None}
    torch.save({
        "state_dict": {"decoder." + k: v for k, v in decoder.state_dict().items()}, "decoder_config": decoder.config,
        "encoder_config": encoder, "encoder_fingerprint": encoder_fingerprint(classifier, **encoder),
    }, paths["decoder"])  # fmt: skip
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        array = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
        array[8:28, 8:28] = (255, 0, 0)
        Image.fromarray(array).save(folder / name)
    return folder


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that `auto` treats as computing bf16 natively (AMX), whatever this machine has."""
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ["amx_bf16"])


def floating_tensors(value) -> list[torch.Tensor]:
    """Every floating-point tensor in a saved record (nested dicts / lists)."""
    if torch.is_tensor(value):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        return [t for item in value.values() for t in floating_tensors(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in floating_tensors(item)]
    return []


def run_explain(checkpoints, images: Path, out: Path, *extra: str) -> None:
    assert explain.main(["--classifier", str(checkpoints["classifier"]), "--images", str(images), "--out", str(out), *FAST, *extra]) == 0


def test_gradcam_in_bf16_matches_fp32_and_the_line_names_the_precision(checkpoints, images, tmp_path, capsys):
    maps = {}
    for precision in ("32", "bf16"):
        out = tmp_path / precision
        run_explain(checkpoints, images, out, "--methods", "gradcam", "--topk", "4", "--precision", precision)
        assert f"precision {precision} (asked for) on cpu" in capsys.readouterr().out
        maps[precision] = {path.name: torch.load(path, weights_only=True) for path in (out / "maps").glob("*.pt")}
    assert set(maps["32"]) == set(maps["bf16"]) == {"a.png.pt", "b.png.pt"}
    for name, fp32 in maps["32"].items():
        bf16 = maps["bf16"][name]
        assert all(t.dtype == torch.float32 for t in floating_tensors(bf16)), "everything written stays fp32"
        for c, cls in enumerate(fp32["classes"].tolist()):  # all 4 classes: align them (bf16 may reorder close scores)
            other = bf16["maps"]["gradcam"][bf16["classes"].tolist().index(cls)].flatten()
            r = np.corrcoef(fp32["maps"]["gradcam"][c].flatten().numpy(), other.numpy())[0, 1]
            assert r >= 0.99, (name, cls, r)


def test_auto_says_what_it_picked_and_keeps_ig_in_fp32(checkpoints, images, tmp_path, capsys, bf16_cpu, monkeypatch):
    autocast_seen = []
    integrate = IntegratedGradients.integrate

    def spy(self, *args, **kwargs):
        autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return integrate(self, *args, **kwargs)

    monkeypatch.setattr(IntegratedGradients, "integrate", spy)
    out = tmp_path / "out"
    run_explain(checkpoints, images, out, "--decoder", str(checkpoints["decoder"]), "--methods", "pv,gradcam,ig", "--topk", "1")
    printed = capsys.readouterr().out.splitlines()
    assert "precision auto -> bf16 on cpu: the CPU has amx_bf16: bf16 autocast (accumulation in fp32)" in printed
    assert any(line.startswith("ig: precision auto -> 32 on cpu") and "accuracy guard" in line for line in printed), printed
    assert autocast_seen and not any(autocast_seen), "IG ran under bf16 autocast with --precision auto"
    saved = torch.load(out / "maps" / "a.png.pt", weights_only=True)
    assert {"gradcam", "ig"} <= set(saved["maps"]) and saved["reconstruction"].shape == (3, 64, 64)
    assert all(t.dtype == torch.float32 for t in floating_tensors(saved))


def test_auto_without_native_bf16_is_fp32(checkpoints, images, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: [])
    run_explain(checkpoints, images, tmp_path / "out", "--methods", "gradcam", "--topk", "1", "--precision", "auto")
    assert any(line.startswith("precision auto -> 32 on cpu: the CPU has neither") for line in capsys.readouterr().out.splitlines())


def test_explicit_bf16_runs_every_method_under_autocast(checkpoints, images, tmp_path, monkeypatch, capsys):
    seen = []
    integrate = IntegratedGradients.integrate
    monkeypatch.setattr(IntegratedGradients, "integrate", lambda self, *a, **k: seen.append(torch.is_autocast_enabled("cpu")) or integrate(self, *a, **k))
    run_explain(checkpoints, images, tmp_path / "out", "--methods", "ig", "--topk", "1", "--precision", "bf16")
    assert seen and all(seen)
    assert "precision bf16 (asked for) on cpu" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["explain", "analyze", "featvis", "evaluate-explanations"])
def test_invalid_precision_is_a_one_line_error(command, capsys):
    assert pv_main([command, "--precision", "fp16"]) == 2
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.startswith(f"pv {command}: error:")]
    assert len(lines) == 1 and "Traceback" not in error, error
    assert "--precision" in lines[0] and "fp16" in lines[0]


@pytest.mark.parametrize("module", [explain, analyze, featvis, evaluate])
def test_every_model_command_takes_precision_with_aliases(module):
    required = {
        explain: ["--arch", "resnet18", "--images", "x", "--out", "y"], evaluate: ["--arch", "resnet18", "--images", "x", "--out", "y"],
        analyze: ["--checkpoint", "x", "--data", "y"], featvis: ["--arch", "resnet18", "--out", "y"],
    }[module]  # fmt: skip
    assert module.parser().parse_args(required).precision == ("32" if module is analyze else "auto")  # analyze: buckets in fp32
    assert module.parser().parse_args([*required, "--precision", "bf16-mixed"]).precision == "bf16"
    assert module.parser().parse_args([*required, "--precision", "fp32"]).precision == "32"


def test_featvis_in_bf16_writes_its_images(checkpoints, tmp_path, capsys):
    out = tmp_path / "featvis"
    assert featvis.main(["--classifier", str(checkpoints["classifier"]), "--out", str(out), "--size", "32", "--octaves", "2",
                         "--steps", "2", "--class", "0", "--precision", "bf16", "--device", "cpu"]) == 0  # fmt: skip
    assert "precision bf16 (asked for) on cpu" in capsys.readouterr().out
    assert (out / "featvis_class_0_cat.png").is_file() and (out / "featvis_grid.png").is_file()


def test_evaluate_in_bf16_writes_fp32_numbers(checkpoints, images, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate.main(["--classifier", str(checkpoints["classifier"]), "--decoder", str(checkpoints["decoder"]), "--images", str(images),
                          "--out", str(out), "--methods", "gradcam,pv", "--steps", "4", *FAST, "--precision", "bf16"]) == 0  # fmt: skip
    assert "precision bf16 (asked for) on cpu" in capsys.readouterr().out
    text = (out / "saliency_metrics.csv").read_text()
    assert "gradcam" in text and "pv" in text and (out / "decoder_metrics.csv").is_file()


def test_payloads_come_back_in_fp32():
    payload = to_cpu({"maps": torch.ones(2, 3, dtype=torch.bfloat16), "p": [torch.ones(2, dtype=torch.float16)], "ids": torch.arange(3)})
    assert payload["maps"].dtype == payload["p"][0].dtype == torch.float32 and payload["ids"].dtype == torch.int64


def test_saliency_batches_and_ig_steps_default_to_the_methods_own(checkpoints):
    """Issue 13.4: the CLI passed --internal-batch-size 64 and --ig-steps 32 always, so LIME / IG never sized
    their batches to memory and IG never used its own default (16 steps plus the completeness check)."""
    args = explain.parser().parse_args(["--arch", "resnet18", "--images", "x", "--out", "y"])
    options = saliency_options(args, "softmax")
    assert not {"internal_batch_size", "batch_size", "n_steps"} & set(options)
    model = Classifier("resnet18", num_classes=4, weights=None).eval()
    ig, lime = make_saliency("ig", model, options), make_saliency("lime", model, options)
    assert ig.internal_batch_size is None and lime.batch_size is None  # sized by pv.explain.batching
    assert ig.n_steps == IntegratedGradients.options()["n_steps"].default and ig.completeness_tolerance is not None
    given = saliency_options(explain.parser().parse_args(["--arch", "r", "--images", "x", "--out", "y", "--internal-batch-size", "8", "--ig-steps", "6"]))
    assert make_saliency("ig", model, given).internal_batch_size == 8 and make_saliency("ig", model, given).n_steps == 6
    assert make_saliency("lime", model, given).batch_size == 8
