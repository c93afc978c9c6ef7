"""scripts/real.py end to end (tiny preset) on the first 24 shared ImageNet photos: every step runs, the
summary carries the keys issue 19 lists, the report and gallery are written, and a second run resumes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "imagenet_samples"
pytestmark = [pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/imagenet_samples"), pytest.mark.slow]  # six processes: 8 min on the loaded 2-core machine
KEYS = ["classifier.top1", "decoder.ssim", "decoder.psnr", "decoder.agreement_top1", "decoder.agreement_top5",
        "references.matched_blur.agreement_top1", "references.matched_blur.ssim", "references.output_size.agreement_top1",
        "references.mean_image.agreement_top1"] + [f"observers.{arm}.{s}" for arm in ("photo", "gradcam", "reconstruction", "pv") for s in ("right", "wrong")]  # fmt: skip


def value(summary: dict, key: str):
    for part in key.split("."):
        summary = summary[part]
    return summary


def run(photos: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, "scripts/real.py", "--preset", "tiny", "--root", str(photos), "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)


def test_real_tiny_end_to_end_and_resume(tmp_path):
    photos = tmp_path / "photos"  # the first 24 files: classes 0..23 (file order = class index); Lite0 gets 4 of them wrong
    photos.mkdir()
    for path in sorted(SHARED.iterdir())[:24]:
        (photos / path.name).symlink_to(path)
    out = tmp_path / "real"
    result = run(photos, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for command in ("pv fit", "pv explain", "pv evaluate-explanations", "pv sanity-check"):
        assert f"$ {command} " in result.stdout  # printed before it runs
    summary = json.loads((out / "summary.json").read_text())
    for key in KEYS:
        number = value(summary, key)
        assert isinstance(number, float | int) and 0 <= number <= (100 if key == "decoder.psnr" else 1), key
    assert summary["classifier"]["photos"] == 24 and summary["classifier"]["wrong"] >= 1
    assert summary["classifier"]["top1"] >= 0.75  # the packaged weights, not random ones
    assert summary["references"]["output_size"]["agreement_top1"] >= summary["references"]["mean_image"]["agreement_top1"]
    detail = summary["observers"]["detail"]
    assert set(detail["arms"]["pv"]["wrong"]["options"]["per_observer"]) == {"tf_efficientnet_lite1", "tf_efficientnet_lite2"}
    assert detail["n_images"] == {"right": 3, "wrong": 3}
    assert set(summary["saliency"]["deletion_insertion"]) == {"gradcam", "ig", "guided_backprop", "pv"}
    report = (out / "report.html").read_text()
    assert report.index("Design") < report.index("Decoder (held-out") < report.index("Machine observers")
    gallery = json.loads((out / "gallery.json").read_text())
    assert gallery and all((out / f).is_file() for g in gallery for f in g["files"].values())
    assert (out / "explain" / "index.html").is_file() and (out / "sanity" / "sanity.png").is_file()

    again = run(photos, out)  # resumable: every finished step is skipped
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier (skipped)") == 8 and "$ pv" not in again.stdout
    refused = subprocess.run([sys.executable, "scripts/real.py", "--preset", "demo", "--root", str(photos), "--out", str(out)],
                             cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "holds a run" in refused.stderr
