"""Issue 15: `pv analyze` through Trainer.predict: two CPU processes (gloo) give what one gives; a re-run resumes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from .conftest import REPO

VOC_DATA = str(REPO / "configs" / "data" / "voc.yaml")


def analyze(checkpoint, voc_root, out, *extra: str) -> subprocess.CompletedProcess:
    arguments = ["analyze", "--checkpoint", str(checkpoint), "--data", VOC_DATA, "--root", str(voc_root), "--split", "trainval",
                 "--image-size", "32", "--batch-size", "2", "--num-workers", "0", "--device", "cpu", "--out", str(out), *extra]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pv.cli", *arguments], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_analyze_on_two_processes_matches_one_and_resumes(trained_checkpoint, voc_root, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    done = analyze(trained_checkpoint, voc_root, one)
    assert done.returncode == 0, done.stderr
    done = analyze(trained_checkpoint, voc_root, two, "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote ") == 1  # rank 0 alone reports
    rows_one, rows_two = (json.loads((out / "predictions.json").read_text()) for out in (one, two))
    assert [r["id"] for r in rows_one] == [r["id"] for r in rows_two] and len(rows_one) == 8
    assert [r["bucket"] for r in rows_one] == [r["bucket"] for r in rows_two]
    probs = lambda rows: [[v for k, v in r.items() if k.startswith("prob_")] for r in rows]  # noqa: E731
    np.testing.assert_allclose(probs(rows_one), probs(rows_two), atol=1e-5)
    again = analyze(trained_checkpoint, voc_root, two)
    assert again.returncode == 0 and "resuming, 8 of 8 image(s) already done" in again.stdout
    assert json.loads((two / "predictions.json").read_text()) == rows_two
