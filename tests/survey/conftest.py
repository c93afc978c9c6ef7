"""Fixtures for the study app: tiny checkpoints, a predictions table and a built study (64 px, 4 questions)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from survey_testdata import COMPLETION_CODE, TABLE, save_checkpoints, write_predictions

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> dict[str, Path]:
    """One generated 80x72 PNG per TABLE row (seeded noise + a coloured square)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {}
    for k, (image_id, *_rest) in enumerate(TABLE):
        array = rng.integers(0, 255, size=(72, 80, 3), dtype=np.uint8)
        array[10 + k:40 + k, 20:50] = (40 * k % 255, 200, 255 - 30 * k)
        paths[image_id] = folder / f"{image_id}.png"
        Image.fromarray(array).save(paths[image_id])
    return paths


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """A random ResNet-18 VOC classifier trained "at 64 px" and the decoder of its layer4 latent."""
    return save_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def analysis_dir(tmp_path_factory, tiny_images) -> Path:
    folder = tmp_path_factory.mktemp("analysis")
    write_predictions(folder / "predictions.csv", TABLE, tiny_images)
    return folder


@pytest.fixture(scope="session")
def study(tmp_path_factory, analysis_dir, checkpoints) -> Path:
    """A study built by the real builder: 2 correct + 2 incorrect questions at 64 px. Treat as read-only."""
    from pv.survey.build import build_study

    out = tmp_path_factory.mktemp("studies") / "tiny"
    with warnings.catch_warnings():  # a random classifier disagrees with the hand-made table
        warnings.simplefilter("ignore", UserWarning)
        build_study(analysis_dir, *checkpoints, out, n_correct=2, n_incorrect=2, seed=3, panel_size=64, progress=False)
    return out


@pytest.fixture()
def old_study(tmp_path) -> tuple[Path, Path]:
    """A study folder and a response database written by the survey code before issues 10 and 16 (commit bec6d17,
    see data/make_old_fixture.py): format-1 manifest, cookie key in the database, one complete and one half-done
    participant. Copied, so tests may upgrade it."""
    import shutil

    study = shutil.copytree(DATA / "old_study", tmp_path / "old_study")
    db_path = tmp_path / "old_responses.sqlite"
    shutil.copyfile(DATA / "old_responses.db", db_path)
    return study, db_path



@pytest.fixture(scope="session")
def platform_study(tmp_path_factory, analysis_dir, checkpoints) -> Path:
    """The tiny study for Prolific: 2 + 2 questions, one attention check at position 3, completion code. Read-only."""
    from pv.survey.build import build_study
    from pv.survey.platform import platform_config

    out = tmp_path_factory.mktemp("studies") / "prolific"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        build_study(analysis_dir, *checkpoints, out, n_correct=2, n_incorrect=2, seed=3, panel_size=64, progress=False,
                    attention=1, platform=platform_config("prolific", COMPLETION_CODE))  # fmt: skip
    return out
