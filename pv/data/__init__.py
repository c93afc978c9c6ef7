"""Data: robust image reading, datasets and LightningDataModules."""
from pv.data.cache import CachedDataModule, build_cache, cache_latents
from pv.data.datamodules import ImageDataModule, ImageFolderDataModule, QuickstartDataModule, VOCDataModule
from pv.data.datasets import VOC_CLASSES, EmptyDatasetError, ImageFileDataset, image_folder, voc_dataset, voc_labels
from pv.data.images import UnreadableImageError, list_images, load_image, to_rgb, to_tensor
from pv.data.transforms import ImageTransform

__all__ = [
    "VOC_CLASSES", "CachedDataModule", "EmptyDatasetError", "build_cache", "cache_latents", "ImageDataModule", "ImageFileDataset", "ImageFolderDataModule", "ImageTransform",
    "QuickstartDataModule", "UnreadableImageError", "VOCDataModule", "image_folder", "list_images", "load_image",
    "to_rgb", "to_tensor", "voc_dataset", "voc_labels",
]  # fmt: skip
