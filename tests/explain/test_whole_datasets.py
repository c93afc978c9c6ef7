"""Issue 15: explaining whole datasets: Trainer.predict over ranks, merged index, resume, W&B, the gallery at scale."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pv.cli import main as pv_main
from pv.data.results import ResultStore
from pv.explain.gallery import Entry, write_index
from pv.models import Classifier

from .test_explain_cli import FAST, one_line_error, save_classifier

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")


def photos(folder: Path, count: int, size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray((rng.random((size, size + 4, 3)) * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def explain_args(checkpoints, images: Path, out: Path, *extra: str) -> list[str]:
    return ["explain", "--classifier", str(checkpoints["classifier"]), "--images", str(images), "--methods", "gradcam",
            "--topk", "2", "--out", str(out), "--device", "cpu", *FAST, *extra]  # fmt: skip


def index(out: Path) -> list[dict]:
    return json.loads((out / "index.json").read_text())


def test_index_lists_every_image_once_and_a_rerun_does_only_what_is_missing(checkpoints, tmp_path, capsys):
    images = photos(tmp_path / "images", 4)
    (images / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="broken.png"):
        assert pv_main(explain_args(checkpoints, images, out)) == 0
    first = index(out)
    assert [r["key"] for r in first] == ["broken.png", "img00.png", "img01.png", "img02.png", "img03.png"]
    assert [r["status"] for r in first] == ["unreadable"] + ["ok"] * 4
    assert not list((out / "shards").glob("*.json"))  # merged into the index
    assert (out / "index.csv").read_text().count("\n") == 6 and json.loads((out / "manifest.json").read_text())["command"] == "explain"
    capsys.readouterr()

    # a lost figure and a changed image are done again; the rest is skipped
    (out / "figures" / "img01.png.png").unlink()
    photos(tmp_path / "other", 1)
    (tmp_path / "other" / "img00.png").replace(images / "img03.png")
    before = (out / "maps" / "img00.png.pt").stat().st_mtime_ns
    with pytest.warns(UserWarning, match="broken.png"):
        assert pv_main(explain_args(checkpoints, images, out)) == 0
    assert "resuming, 3 of 5 image(s) already done" in capsys.readouterr().out
    assert (out / "maps" / "img00.png.pt").stat().st_mtime_ns == before and (out / "figures" / "img01.png.png").is_file()
    second = index(out)
    assert [r["key"] for r in second] == [r["key"] for r in first]
    assert second[4]["sha256"] != first[4]["sha256"] and second[1] == first[1] and second[3] == first[3]
    np.testing.assert_allclose(second[2]["probabilities"], first[2]["probabilities"], atol=1e-6)  # done again, same result


def test_an_output_folder_of_another_classifier_is_refused_and_kept(checkpoints, tmp_path, capsys):
    images = photos(tmp_path / "images", 2)
    out = tmp_path / "out"
    assert pv_main(explain_args(checkpoints, images, out)) == 0
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    torch.manual_seed(3)
    other = save_classifier(tmp_path / "other.ckpt", Classifier("resnet18", num_classes=4, weights=None, class_names=["cat", "dog", "car", "tree"]))
    arguments = explain_args(checkpoints, images, out)
    arguments[arguments.index("--classifier") + 1] = str(other)
    capsys.readouterr()
    assert pv_main(arguments) == 2
    line = one_line_error(capsys)
    assert f"--out {out} holds results made with other models or settings (classifier." in line and "choose another --out" in line
    assert pv_main([*explain_args(checkpoints, images, out), "--topk", "1"]) == 2
    assert "settings.topk: 2 there, 1 now" in one_line_error(capsys)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written  # nothing lost


def test_evaluate_and_explain_take_the_trainer_flags(checkpoints, tmp_path):
    images = photos(tmp_path / "images", 2)
    out = tmp_path / "ev"
    assert pv_main(["evaluate-explanations", "--classifier", str(checkpoints["classifier"]), "--images", str(images), "--steps", "2",
                    "--out", str(out), "--accelerator", "cpu", "--devices", "1", "--strategy", "auto", *FAST]) == 0  # fmt: skip
    rows = index(out)
    assert [r["key"] for r in rows] == ["img00.png", "img01.png"] and 0 <= rows[0]["gradcam_deletion_auc"] <= 1
    assert len(rows[0]["curves"]["gradcam"]["deletion"]) == 3


def fake_gallery(out: Path, count: int) -> Path:
    (out / "figures").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out / "figures" / "x.png")
    buckets, classes = ("correct", "partial", "incorrect", "empty"), ("cat", "dog", "car", "tree", "bird")
    entries = [
        Entry(out / "figures" / "x.png", f"image {i}", f"caption {i}", {}, {"bucket": [buckets[i % 4]], "class": [classes[i % 5], classes[(i + 1) % 5]]})
        for i in range(count)
    ]
    return write_index(out, entries, "pv explain", f"{count} images")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install -y chromium")
def test_gallery_of_5000_images_pages_and_filters_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file = fake_gallery(tmp_path / "out", 5000)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            visible = lambda: page.locator("main > figure:visible")  # noqa: E731
            assert visible().count() == 60
            assert "of 5000 (page 1 of 84" in page.inner_text("#status")
            page.select_option("select[name=bucket]", "incorrect")
            assert visible().count() == 60 and "of 1250" in page.inner_text("#status")
            assert set(visible().evaluate_all("cs => cs.map(c => JSON.parse(c.dataset.tags).bucket[0])")) == {"incorrect"}
            page.select_option("select[name=class]", "cat")  # i % 4 == 2 and cat in {i % 5, (i + 1) % 5}: 500 images
            assert "of 500 (page 1 of 9" in page.inner_text("#status")
            first = visible().first.inner_text()
            page.click("#next")
            assert "showing 61-120 of 500" in page.inner_text("#status") and visible().first.inner_text() != first
            page.select_option("select[name=bucket]", "")
            assert "of 2000" in page.inner_text("#status")
        finally:
            browser.close()


def run_pv(arguments: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pv.cli", *arguments], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def maps(out: Path) -> dict[str, torch.Tensor]:
    return {p.relative_to(out / "maps").as_posix(): torch.load(p)["maps"]["gradcam"] for p in sorted((out / "maps").rglob("*.pt"))}


def same_results(one: Path, other: Path) -> None:
    first, second = index(one), index(other)
    assert [r["key"] for r in first] == [r["key"] for r in second]
    assert [r["classes"] for r in first] == [r["classes"] for r in second]
    np.testing.assert_allclose([r["probabilities"] for r in first], [r["probabilities"] for r in second], atol=1e-5)
    maps_one, maps_other = maps(one), maps(other)
    assert list(maps_one) == list(maps_other)
    for key in maps_one:
        torch.testing.assert_close(maps_one[key], maps_other[key], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_explain_on_two_processes_matches_one(checkpoints, tmp_path):
    images = photos(tmp_path / "images", 5)
    single, double = tmp_path / "one", tmp_path / "two"
    done = run_pv(explain_args(checkpoints, images, single, "--batch-size", "2")[0:])
    assert done.returncode == 0, done.stderr
    done = run_pv([*explain_args(checkpoints, images, double), "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Wrote 5 figure(s)") == 1  # rank 0 alone reports
    same_results(single, double)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(checkpoints, tmp_path):
    images = photos(tmp_path / "images", 10)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    arguments = [*explain_args(checkpoints, images, killed), "--batch-size", "1"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "pv.cli", *arguments], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(ResultStore(killed, "explain").shard_files()) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "index.json").exists(), "the run finished before it was killed"
    shards = len(ResultStore(killed, "explain").shard_files())
    done = run_pv(arguments)
    assert done.returncode == 0, done.stderr
    assert f"resuming, {shards} of 10 image(s) already done" in done.stdout
    assert not list(killed.rglob("*.tmp"))
    assert run_pv([*explain_args(checkpoints, images, clean), "--batch-size", "1"]).returncode == 0
    same_results(clean, killed)


@pytest.mark.slow
def test_wandb_logs_one_row_per_image(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    images = photos(tmp_path / "images", 3)
    out = tmp_path / "out"
    arguments = explain_args(checkpoints, images, out)
    arguments[arguments.index("--methods") + 1] = "pv,gradcam"
    assert pv_main([*arguments, "--decoder", str(checkpoints["decoder"]), "--logger", "wandb", "--wandb-project", "pv-test"]) == 0
    (table,) = list((out / "wandb").glob("offline-run-*/files/media/table/images_*.table.json"))
    data = json.loads(table.read_text())
    assert data["columns"][:5] == ["image", "input", "Grad-CAM", "reconstruction", "PV"] and "bucket" in data["columns"]
    assert [row[0] for row in data["data"]] == ["img00.png", "img01.png", "img02.png"]
    assert all(cell == "Image" for row in data["data"] for cell in row[1:5])  # the images travel in the run's artifact
