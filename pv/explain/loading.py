"""Moved: classifiers load from `pv.models.loading`, image folders from `pv.data.batches`,
command-line helpers live in `pv.commands.common`. Kept so old imports keep working."""
from pv.models.loading import TorchvisionClassifier, load_classifier

__all__ = ["TorchvisionClassifier", "load_classifier"]
