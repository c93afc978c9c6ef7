import numpy as np
import pytest
import torch
from PIL import Image

from pv.data import EmptyDatasetError, ImageTransform, UnreadableImageError, image_folder, load_image


def save(path, array_or_image, **kwargs):
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    image.save(path, **kwargs)
    return path


@pytest.fixture
def odd_images(tmp_path):
    """One file per awkward case, plus a good one."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    save(folder / "good.jpg", rgb)
    save(folder / "gray.png", rgb[..., 0])
    rgba = np.dstack([rgb, np.full((40, 50), 0, np.uint8)])  # fully transparent -> white
    save(folder / "rgba.png", rgba)
    save(folder / "cmyk.jpg", Image.fromarray(rgb).convert("CMYK"))
    save(folder / "nested" / "deep16.png", Image.fromarray(np.full((40, 50), 65535, np.uint16)))
    save(folder / "tiny.png", rgb[:4, :4])
    save(folder / "palette.gif", Image.fromarray(rgb).convert("P"))
    jpeg = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.png").write_text("not an image")
    return folder


def test_modes_become_8bit_rgb(odd_images):
    assert load_image(odd_images / "gray.png").mode == "RGB"
    assert load_image(odd_images / "cmyk.jpg").mode == "RGB"
    white = np.asarray(load_image(odd_images / "rgba.png"))
    assert white.min() == 255  # transparent pixels composited on white
    sixteen = np.asarray(load_image(odd_images / "nested" / "deep16.png"))
    assert sixteen.dtype == np.uint8 and sixteen.min() == 255  # 65535 -> 255, not clipped garbage
    assert load_image(odd_images / "palette.gif").size == (50, 40)


@pytest.mark.parametrize("name", ["truncated.jpg", "notes.png"])
def test_unreadable_file_error_names_the_file(odd_images, name):
    with pytest.raises(UnreadableImageError, match=name):
        load_image(odd_images / name)


def test_folder_dataset_skips_bad_files_with_a_warning_and_never_crashes(odd_images):
    dataset = image_folder(odd_images, ImageTransform(32))
    assert len(dataset) == 9  # recursive: nested/deep16.png included
    with pytest.warns(UserWarning) as record:
        samples = [dataset[i] for i in range(len(dataset))]
    messages = " ".join(str(w.message) for w in record)
    assert "truncated.jpg" in messages and "notes.png" in messages and "smaller than 32" in messages
    assert all(s["image"].shape == (3, 32, 32) for s in samples)
    assert all(0 <= s["image"].min() and s["image"].max() <= 1 for s in samples)
    assert not any(s["path"].endswith(("truncated.jpg", "notes.png")) for s in samples)


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(EmptyDatasetError, match=str(tmp_path)):
        image_folder(tmp_path, ImageTransform(32))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        image_folder(tmp_path / "nowhere", ImageTransform(32))


def test_train_transform_is_random_and_eval_is_deterministic():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8))
    train, val = ImageTransform(48, train=True), ImageTransform(48)
    torch.manual_seed(0)
    crops = [train(image) for _ in range(4)]
    assert any(not torch.equal(crops[0], c) for c in crops[1:])
    assert torch.equal(val(image), val(image))
