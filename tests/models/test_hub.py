"""Issue 22: shared folders (model.safetensors + config.json + README.md) and Hub ids, read by every loader,
cross-checked, never a pickle."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from pv.errors import CheckpointError
from pv.models import Classifier, Decoder, FrozenEncoder, load_checkpoint, load_classifier, load_decoder
from pv.models.checkpoint import training_data
from pv.models.fingerprint import encoder_fingerprint
from pv.models.hub import CARD, CONFIG, WEIGHTS, hub_id, is_shared, weights_sha256


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A classifier checkpoint and a decoder checkpoint of its layer4, shaped like pv fit's."""
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    classifier = Classifier("resnet18", num_classes=3, weights=None, class_names=["cat", "dog", "car"], input_size=64).eval()
    paths = {"classifier": root / "cls.ckpt", "decoder": root / "dec.ckpt"}
    torch.save({"state_dict": {"model." + k: v for k, v in classifier.state_dict().items()}, "classifier_config": classifier.config}, paths["classifier"])
    encoder = {"arch": "resnet18", "layer": "layer4", "weights": None, "checkpoint": str(paths["classifier"])}
    torch.manual_seed(1)
    decoder = Decoder(512, (8, 8, 8, 8, 8))
    record = {"dataset": "toy", "root": "", "split": "train", "seed": 0, "n_images": 2, "files": ["a.png", "b.png"],
              "files_sha256": hashlib.sha256(b"a.png\nb.png").hexdigest()}  # fmt: skip
    torch.save({
        "state_dict": {"decoder." + k: v for k, v in decoder.state_dict().items()}, "decoder_config": decoder.config,
        "encoder_config": encoder, "encoder_fingerprint": encoder_fingerprint(classifier, **encoder), "pv_training_data": record,
        "global_step": 7, "epoch": 2,
    }, paths["decoder"])  # fmt: skip
    return paths


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """`pv export` of both checkpoints (no --images)."""
    from pv.commands.export import main as export_main

    root = tmp_path_factory.mktemp("shared")
    folders = {"decoder": root / "decoder", "classifier": root / "classifier"}
    assert export_main(["--decoder", str(checkpoints["decoder"]), "--out", str(folders["decoder"])]) == 0
    assert export_main(["--classifier", str(checkpoints["classifier"]), "--out", str(folders["classifier"])]) == 0
    return folders


def copy_of(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def assert_no_pickle(folder: Path) -> None:
    """Every file is JSON, Markdown, PNG or safetensors (an 8-byte header length, then a JSON header): no zip, no pickle."""
    for path in folder.iterdir():
        data = path.read_bytes()
        assert not data.startswith(b"PK") and not data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"), path
        assert b"torch._utils" not in data and b"_rebuild_tensor" not in data, path
        if path.suffix == ".safetensors":
            (length,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8 : 8 + length])
            kind = json.loads((folder / CONFIG).read_text())["pv"]["kind"]
            assert header.pop("__metadata__") == {"format": "pt", "pv_kind": kind}
            assert header and all(set(entry) == {"dtype", "shape", "data_offsets"} for entry in header.values())
        elif path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".md":
            data.decode("utf-8")
        else:
            assert path.suffix == ".png" and data.startswith(b"\x89PNG"), path


def test_exported_folders_hold_safetensors_json_and_a_card(exported):
    for kind, folder in exported.items():
        assert {p.name for p in folder.iterdir()} == {WEIGHTS, CONFIG, CARD}  # no --images: no figure
        assert_no_pickle(folder)
        config = json.loads((folder / CONFIG).read_text())
        assert config["pv"]["kind"] == kind and config["pv"]["format"] == 1
    config = json.loads((exported["decoder"] / CONFIG).read_text())
    assert config["widths"] == [8, 8, 8, 8, 8] and config["in_channels"] == 512  # the constructor's arguments, by name
    assert config["pv"]["encoder"]["layer"] == "layer4" and config["pv"]["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert config["pv"]["training"]["epochs"] == 3 and config["pv"]["training"]["steps"] == 7  # "epoch" 2 saved: 3 epochs run
    card = (exported["decoder"] / CARD).read_text()
    assert "Not measured: export with `--images DIR`" in card and "Not recorded" not in card.split("## Training data")[1].split("##")[0]


def test_a_folder_loads_as_its_checkpoint(checkpoints, exported):
    decoder, encoder_config = load_decoder(checkpoints["decoder"])
    shared, shared_config = load_decoder(exported["decoder"])
    assert shared_config == encoder_config  # layer, checkpoint and the fingerprint PV checks
    for (name, a), (_, b) in zip(decoder.state_dict().items(), shared.state_dict().items()):
        assert torch.equal(a, b), name
    classifier, shared_classifier = load_classifier(checkpoint=str(checkpoints["classifier"])), load_classifier(checkpoint=str(exported["classifier"]))
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(shared_classifier(images), classifier(images), rtol=0, atol=0)
    assert (shared_classifier.activation, shared_classifier.input_size, shared_classifier.class_names) == ("sigmoid", 64, ["cat", "dog", "car"])
    # a decoder can be trained on a shared classifier: its encoder is the same, fingerprint included
    from_folder = FrozenEncoder("resnet18", "layer4", checkpoint=str(exported["classifier"]))
    assert from_folder.fingerprint()["params_sha256"] == encoder_config["fingerprint"]["params_sha256"]
    assert training_data(exported["decoder"])["n_images"] == 2 and training_data(exported["classifier"]) is None


def test_the_mixin_reads_the_folder_strictly(exported):
    decoder = Decoder.from_pretrained(exported["decoder"])
    assert isinstance(decoder, Decoder) and not decoder.training and decoder.config["widths"] == [8, 8, 8, 8, 8]
    classifier = Classifier.from_pretrained(exported["classifier"])
    assert classifier.num_classes == 3 and classifier.class_names == ["cat", "dog", "car"]
    with pytest.raises(CheckpointError, match="holds a pv classifier, not a decoder"):
        Decoder.from_pretrained(exported["classifier"])
    with pytest.raises(CheckpointError, match="not a pv decoder checkpoint"):
        load_decoder(exported["classifier"])


def tamper_config(folder: Path, change) -> None:
    config = json.loads((folder / CONFIG).read_text())
    change(config)
    (folder / CONFIG).write_text(json.dumps(config))


def test_folders_whose_parts_disagree_are_refused_in_one_line(exported, tmp_path):
    from safetensors.torch import load_file, save_file

    cases = {}
    folder = copy_of(exported["decoder"], tmp_path / "shapes")
    tamper_config(folder, lambda c: c.update(widths=[8, 8, 8, 8, 4]))  # config and weights: other shapes
    cases[folder] = "decoder weights do not match its config"
    folder = copy_of(exported["decoder"], tmp_path / "swapped")
    tensors = load_file(folder / WEIGHTS)
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in tensors.items()}, folder / WEIGHTS)  # same shapes, other weights
    cases[folder] = "not the ones config.json describes"
    folder = copy_of(exported["decoder"], tmp_path / "missing")
    tensors = load_file(folder / WEIGHTS)
    tensors.pop("to_rgb.bias")
    save_file(tensors, folder / WEIGHTS)
    tamper_config(folder, lambda c: c["pv"].update(weights_sha256=weights_sha256(tensors)))  # config and weights agree, but a key is missing
    (folder / CARD).unlink()  # no card: nothing else to disagree with
    cases[folder] = "Missing key.*to_rgb.bias"
    folder = copy_of(exported["decoder"], tmp_path / "card")
    card = (folder / CARD).read_text()
    fingerprint = json.loads((folder / CONFIG).read_text())["pv"]["encoder_fingerprint"]["params_sha256"]
    (folder / CARD).write_text(card.replace(fingerprint, "f" * 64, 1))  # the card's header names another encoder (YAML keeps it a string)
    cases[folder] = "model card .* says pv_encoder_params_sha256 ffff"
    folder = copy_of(exported["decoder"], tmp_path / "pickled")
    (folder / WEIGHTS).rename(folder / "pytorch_model.bin")
    cases[folder] = "has no model.safetensors .*pytorch_model.bin: pv does not read pickled weights"
    folder = copy_of(exported["decoder"], tmp_path / "foreign")
    tamper_config(folder, lambda c: c.pop("pv"))
    cases[folder] = "has no pv record"
    folder = tmp_path / "empty"
    folder.mkdir()
    cases[folder] = "is a folder, not a file .*no config.json"
    for folder, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_decoder(folder)
        assert "\n" not in str(info.value) and str(folder) in str(info.value), folder


def test_hub_ids_are_told_from_local_paths(tmp_path, exported):
    assert hub_id("someone/pv-decoder") == "someone/pv-decoder" and is_shared("someone/pv-decoder")
    for local in ("runs/last.ckpt", "missing/model.pt", "/abs/path", "../up/one", "one-part", "a/b/c", str(exported["decoder"])):
        assert hub_id(local) is None, local
    assert is_shared(exported["decoder"]) and not is_shared(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint("runs/last.ckpt")  # a missing local file stays a missing local file


def serve_from(folder: Path, calls: list):
    def hf_hub_download(repo_id, filename, **options):
        calls.append((repo_id, filename))
        path = folder / filename
        if not path.is_file():
            from huggingface_hub.errors import EntryNotFoundError

            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    return hf_hub_download


def test_a_hub_id_is_downloaded_through_huggingface_hub(exported, monkeypatch):
    import huggingface_hub
    import huggingface_hub.hub_mixin

    calls: list = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", serve_from(exported["decoder"], calls))
    monkeypatch.setattr(huggingface_hub.hub_mixin, "hf_hub_download", serve_from(exported["decoder"], calls))
    decoder, encoder_config = load_decoder("someone/pv-decoder")
    assert {("someone/pv-decoder", name) for name in (CONFIG, WEIGHTS, CARD)} <= set(calls)
    local, local_config = load_decoder(exported["decoder"])
    assert encoder_config == local_config and torch.equal(decoder.to_rgb.weight, local.to_rgb.weight)
    assert torch.equal(Decoder.from_pretrained("someone/pv-decoder").to_rgb.weight, local.to_rgb.weight)


def test_offline_a_hub_id_says_how_to_download_it(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(**options):
        raise LocalEntryNotFoundError("cannot reach the Hub and the file is not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: offline(**k))
    with pytest.raises(CheckpointError) as info:
        load_decoder("someone/pv-decoder")
    message = str(info.value)
    assert "\n" not in message and "someone/pv-decoder" in message
    assert "hf download someone/pv-decoder --local-dir DIR" in message


def test_a_plain_save_pretrained_round_trips_but_is_no_pv_export(tmp_path):
    torch.manual_seed(0)
    decoder = Decoder(16, (8, 8))
    decoder.save_pretrained(tmp_path / "plain")
    assert "pv export` writes the model card" in (tmp_path / "plain" / CARD).read_text()
    assert torch.equal(Decoder.from_pretrained(tmp_path / "plain").to_rgb.weight, decoder.to_rgb.weight)
    with pytest.raises(CheckpointError, match="has no pv record"):  # no encoder record: pv cannot check what it explains
        load_decoder(tmp_path / "plain")


def test_held_out_images_must_not_be_training_images(checkpoints, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from pv.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "c.png"):
        Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(images / name)
    checkpoint = torch.load(checkpoints["decoder"], weights_only=True)
    checkpoint["pv_training_data"]["root"] = str(images)  # trained on images/a.png and images/b.png
    torch.save(checkpoint, tmp_path / "dec.ckpt")
    assert main(["export", "--decoder", str(tmp_path / "dec.ckpt"), "--images", str(images), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "1 of the images were trained on" in err and "a.png" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
