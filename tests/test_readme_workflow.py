"""Issue 11 ("done when"): the README's paper workflow, command by command as a user types them, on the
8-image VOC devkit in ../shared/data (2012, trainval only) at tiny sizes, with only offline overrides.

Overrides used, and why: `weights: null` (no downloads), 64 px images (ResNet-50's layer4 is then 2 x 2, the
smallest map the explainers accept), 1 epoch, batch 4, no loader workers, every output under tmp_path. M and
its decoder train on the same 70% of the devkit's trainval (the paper configs' split) and `pv analyze` analyses
the other 30% (2 images) as the README says; the study then needs more images than that, so it is built from an
analysis of all of trainval with `--allow-training-images` (the refusal itself: tests/survey/test_survey_training_images.py),
asking for as many questions as the untrained classifier supplies (`--correct/--incorrect`, at most 2 each: a
1-epoch random-init M gets few images right).
`pv survey serve` is a blocking web server: participants answer through the app it serves (Flask test client).
"""
from __future__ import annotations

import contextlib
import csv
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from pv.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TINY = ["--data.init_args.image_size", "64", "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0"]


def pv(*args: str | Path) -> None:
    """`pv ARGS` in-process; every step of the README must exit 0."""
    assert main([str(a) for a in args]) == 0, f"pv {' '.join(map(str, args))} failed"


def wandb_run_ids(run: Path) -> list[str]:
    """Ids of the offline W&B runs in a run folder (`offline-run-<time>-<id>`)."""
    return sorted({folder.name.rsplit("-", 1)[-1] for folder in (run / "wandb").glob("offline-run-*")})


def assert_run_folder(run: Path) -> None:
    """What the README says every `pv fit` run folder holds."""
    assert "id:" in (run / "config.yaml").read_text()  # the W&B run id, for resuming
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list(run.glob("csv/version_*/metrics.csv"))
    assert len(wandb_run_ids(run)) == 1


def form_value(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name!r} field in the page"
    return found.group(1)


def take_part(client) -> int:
    """One participant through the study app: welcome, start, every question (first option); answers given."""
    welcome = client.get("/")
    assert welcome.status_code == 200
    client.post("/start", data={"start": form_value(welcome.text, "start")}, follow_redirects=True)
    answered = 0
    while "Thank you" not in (page := client.get("/question", follow_redirects=True)).text:
        option = re.search(r'name="option" value="([^"]+)"', page.text).group(1)
        fields = {"token": form_value(page.text, "token"), "question": form_value(page.text, "question"), "option": option}
        assert client.post("/answer", data=fields).status_code == 303
        answered += 1
    return answered


@pytest.fixture()
def wandb_default(monkeypatch):
    """W&B as a new user has it (no WANDB_MODE: pv fit makes it offline), restored afterwards."""
    monkeypatch.setenv("WANDB_MODE", "unset")  # recorded, so the value pv fit sets is removed afterwards
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_the_readme_workflow_runs_as_written(voc_root, tmp_path, wandb_default, one_thread):
    # 1. The classifier M (the README's config; random init; its split: 70/30 of trainval).
    classifier_run = tmp_path / "runs" / "classifier" / "voc_resnet50"
    pv("fit", "--config", CONFIGS / "classifier" / "voc_resnet50.yaml", "--data.init_args.root", voc_root,
       "--model.init_args.model.init_args.weights", "null", *TINY, "--trainer.max_epochs", "1",
       "--trainer.default_root_dir", classifier_run)  # fmt: skip
    assert_run_folder(classifier_run)
    classifier = classifier_run / "checkpoints" / "last.ckpt"
    facts = torch.load(classifier, map_location="cpu", weights_only=True)["classifier_config"]
    assert (facts["arch"], facts["activation"], facts["input_size"], facts["num_classes"]) == ("resnet50", "sigmoid", 64, 20)

    # 2. Its decoder: the authors' decoder on M's layer4, their 70/30 split of trainval; M's checkpoint is required.
    decoder_run = tmp_path / "runs" / "decoder_voc_resnet50"
    pv("fit", "--config", CONFIGS / "decoder" / "voc_resnet50.yaml", "--data.init_args.root", voc_root,
       "--model.init_args.encoder.init_args.checkpoint", classifier, *TINY, "--trainer.max_epochs", "1",
       "--trainer.default_root_dir", decoder_run)  # fmt: skip
    assert_run_folder(decoder_run)
    assert (decoder_run / "pv_figure.png").is_file() and (decoder_run / "reconstructions" / "epoch_0000.png").is_file()
    (first_id,) = wandb_run_ids(decoder_run)
    assert f"id: {first_id}" in (decoder_run / "config.yaml").read_text()
    assert wandb_run_ids(classifier_run) != [first_id]  # a W&B run of its own

    #    Resume: the saved config and --ckpt_path last (a longer schedule here), the same W&B run.
    pv("fit", "--config", decoder_run / "config.yaml", "--ckpt_path", "last", "--trainer.max_epochs", "2")
    assert (decoder_run / "reconstructions" / "epoch_0001.png").is_file()
    with open(decoder_run / "csv" / "version_1" / "metrics.csv", newline="") as handle:  # the resumed run's metrics
        assert {row["epoch"] for row in csv.DictReader(handle)} - {""} == {"1"}  # epoch 1 trained, epoch 0 not again
    assert wandb_run_ids(decoder_run) == [first_id]
    decoder = decoder_run / "checkpoints" / "last.ckpt"
    assert torch.load(decoder, map_location="cpu", weights_only=True)["epoch"] == 1
    saved = yaml.safe_load((decoder_run / "config.yaml").read_text())
    assert saved["model"]["init_args"]["encoder"]["init_args"]["checkpoint"] == str(classifier)

    # 3. Where M goes wrong (image size and activation from the checkpoint), on the 30% neither model trained on.
    from pv.models.checkpoint import training_data

    held_out = tmp_path / "runs" / "analysis_heldout"
    pv("analyze", "--checkpoint", classifier, "--data", CONFIGS / "classifier" / "voc_resnet50.yaml", "--root", voc_root, "--out", held_out)
    summary = json.loads((held_out / "summary.json").read_text())
    with open(held_out / "predictions.csv", newline="") as handle:
        held_ids = {row["id"] for row in csv.DictReader(handle)}
    trained = set(training_data(classifier)["files"])
    assert summary["split"] == "heldout" and len(held_ids) == 2 and not held_ids & trained
    assert trained == set(training_data(decoder)["files"]) and len(trained) == 6  # M and decoder: the same 70%
    analysis = tmp_path / "runs" / "analysis"  # all of trainval, for enough questions (see the module docstring)
    pv("analyze", "--checkpoint", classifier, "--data", CONFIGS / "data" / "voc.yaml", "--root", voc_root,
       "--split", "trainval", "--out", analysis)  # fmt: skip
    for name in ("predictions.csv", "predictions.json", "summary.json", "confusion.png", "index.csv", "index.json"):
        assert (analysis / name).is_file(), name
    with open(analysis / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    summary = json.loads((analysis / "summary.json").read_text())
    assert (summary["image_size"], summary["activation"], summary["num_images"]) == (64, "sigmoid", 8)
    # As many questions per subset as the tiny analysis supplies (at most 2); a 1-epoch random-init M gets few right.
    counts = {subset: min(2, summary["buckets"][subset]) for subset in ("correct", "incorrect")}
    assert sum(counts.values()) > 0, f"no correctly or wrongly classified image: {summary['buckets']}"

    #    Explanations (ig and lime work the same way; left out for time).
    images = voc_root / "VOCdevkit" / "VOC2012" / "JPEGImages"
    explained = tmp_path / "runs" / "explain"
    pv("explain", "--classifier", classifier, "--decoder", decoder, "--images", images, "--methods", "pv,gradcam",
       "--topk", "3", "--out", explained)  # fmt: skip
    names = sorted(p.name for p in images.glob("*.jpg"))
    assert sorted(p.name for p in (explained / "figures").glob("*.png")) == [f"{n}.png" for n in names]
    assert sorted(p.name for p in (explained / "maps").glob("*.pt")) == [f"{n}.pt" for n in names]
    for name in ("index.csv", "index.json", "index.html", "manifest.json"):
        assert (explained / name).is_file(), name

    #    The user study: build (as few questions as the tiny analysis supplies), check, answers, analysis.
    study = tmp_path / "survey" / "studies" / "tiny"
    missing = [subset for subset, count in counts.items() if count == 0]  # a subset without questions is a warning
    with pytest.warns(UserWarning, match=f"--{missing[0]} 0") if missing else contextlib.nullcontext():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*were trained on, allowed by --allow-training-images")
            pv("survey", "build", "--analysis", analysis, "--classifier", classifier, "--decoder", decoder, "--out", study,
               "--correct", str(counts["correct"]), "--incorrect", str(counts["incorrect"]), "--allow-training-images")  # fmt: skip
    manifest = json.loads((study / "manifest.json").read_text())
    questions = sum(counts.values())
    shown = {q["image_id"] for q in manifest["questions"]}
    assert manifest["training_images"]["overlap"] == len(shown & trained) and manifest["training_images"]["allowed"]
    assert len(manifest["questions"]) == questions and (study / "preview.html").is_file()
    for arm in ("pv", "gradcam"):
        assert len(list((study / "images" / arm).glob("*.png"))) == questions, arm
    pv("survey", "check", study)

    from pv.survey.app import create_app

    responses = tmp_path / "responses.sqlite"
    app = create_app(study, responses)  # what `pv survey serve STUDY --db responses.sqlite` serves
    assert [take_part(app.test_client()) for _ in range(4)] == [questions] * 4  # two participants per arm

    report = tmp_path / "report"
    pv("survey", "analyze", "--db", responses, "--manifest", study / "manifest.json", "--out", report)
    for name in ("report.md", "summary.json", "per_participant.csv"):
        assert (report / name).is_file(), name
    for subset, count in counts.items():  # a histogram per subset with questions; none drawn empty
        assert (report / f"hist_{subset}.png").is_file() == (count > 0), subset
    with open(report / "per_participant.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4


def test_a_missing_val_split_names_the_hold_out_option(voc_root):
    """A VOC copy with only trainval: the error for the missing val list also names data.init_args.val_fraction."""
    from pv.data import VOCDataModule
    from pv.errors import PVError

    with pytest.raises(PVError, match=r"no split 'val'.*data\.init_args\.val_split.*data\.init_args\.val_fraction"):
        VOCDataModule(root=str(voc_root), train_split="trainval", val_split="val", image_size=32).setup("fit")
