"""pv: Perception Visualization with PyTorch Lightning.

image -> FrozenEncoder -> latent -> Decoder -> reconstruction; classifier -> saliency;
(reconstruction, saliency) -> perception_visualization.
"""
from pv.lit import ClassifierModule, DecoderModule

__all__ = ["ClassifierModule", "DecoderModule"]
__version__ = "0.1.0"
