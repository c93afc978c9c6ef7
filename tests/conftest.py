"""Shared fixtures: the real photos in ../shared/data (tests skip cleanly when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PV_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real-photo test data; skips the test when it is not on this machine."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def voc_root(shared_data: Path) -> Path:
    """Folder holding VOCdevkit/VOC2012 (8 real VOC images with XML annotations)."""
    if not (shared_data / "VOCdevkit" / "VOC2012").is_dir():
        pytest.skip("VOCdevkit not in shared data")
    return shared_data


@pytest.fixture(scope="session")
def photo_dir(shared_data: Path) -> Path:
    """5 real VOC photos without annotations."""
    return shared_data / "voc_unlabeled"
