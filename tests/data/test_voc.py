import shutil

import pytest
import torch

from pv.data import VOC_CLASSES, ImageTransform, VOCDataModule, voc_dataset, voc_labels


def test_voc_reads_real_devkit(voc_root):
    dataset = voc_dataset(voc_root, ImageTransform(64), image_set="trainval")
    assert len(dataset) == 8
    by_id = {p.stem: dataset.labels[i] for i, p in enumerate(dataset.paths)}
    assert by_id["000003"].nonzero().flatten().tolist() == [VOC_CLASSES.index("chair"), VOC_CLASSES.index("sofa")]
    assert by_id["2007_000032"][VOC_CLASSES.index("person")] == 1
    sample = dataset[0]
    assert sample["image"].shape == (3, 64, 64) and sample["label"].shape == (20,)


def test_voc_datamodule_batches(voc_root):
    data = VOCDataModule(root=str(voc_root), train_split="trainval", val_split="trainval", image_size=64, batch_size=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["label"].shape == (4, 20)


def test_missing_voc_root_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"VOCdevkit/VOC2012.*trainval\.txt|trainval\.txt"):
        voc_dataset(tmp_path, ImageTransform(64), image_set="trainval")


@pytest.fixture
def voc_copy(voc_root, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(voc_root / "VOCdevkit", root / "VOCdevkit")
    return root


def test_unknown_class_names_the_xml(voc_copy):
    xml = voc_copy / "VOCdevkit" / "VOC2012" / "Annotations" / "000004.xml"
    xml.write_text(xml.read_text().replace("<name>car</name>", "<name>spaceship</name>"))
    with pytest.raises(ValueError, match=r"spaceship.*000004\.xml"):
        voc_dataset(voc_copy, ImageTransform(64), image_set="trainval")


def test_image_without_objects_is_skipped_with_warning(voc_copy):
    xml = voc_copy / "VOCdevkit" / "VOC2012" / "Annotations" / "000004.xml"
    text = xml.read_text()
    start, end = text.index("<object>"), text.rindex("</object>") + len("</object>")
    xml.write_text(text[:start] + text[end:])
    with pytest.warns(UserWarning, match="000004.xml"):
        dataset = voc_dataset(voc_copy, ImageTransform(64), image_set="trainval")
    assert len(dataset) == 7


def test_voc_labels_multi_hot(voc_root):
    label = voc_labels(voc_root / "VOCdevkit" / "VOC2012" / "Annotations" / "000003.xml")
    assert label.sum() == 2 and label.dtype == torch.float32


def test_data_errors_are_user_errors_printed_in_one_line(tmp_path):
    """A wrong root or a bad data option is the user's to fix: a PVError, which `pv` prints as one line
    (plain ValueError / FileNotFoundError would keep their traceback)."""
    from pv.cli import user_error_message
    from pv.data import ImageFolderDataModule
    from pv.errors import PVError

    with pytest.raises(PVError) as missing:
        voc_dataset(tmp_path, "2012", "train", ImageTransform(32))
    with pytest.raises(PVError) as bad_option:
        ImageFolderDataModule(root=str(tmp_path), val_fraction=1.5)
    for error in (missing.value, bad_option.value):
        message = user_error_message(error)
        assert message is not None and "\n" not in message
    assert "val_fraction" in user_error_message(bad_option.value)
