"""Explanations: saliency methods, Perception Visualization, feature visualization and figures.

`SALIENCY[name](model, **options)` gives a method called as `method(images, targets)` -> maps
(B, 1, H, W) in [0, 1]; `method.attribute(images, targets)` gives the raw attribution.
"""
from pv.explain.cam import class_activation_maps, normalize_maps, upsample_maps
from pv.explain.class_pv import class_discriminative_pv
from pv.explain.featvis import Objective, feature_visualization, objective_value
from pv.explain.gradcam import CAM, GradCAM, GradCAMPlusPlus
from pv.explain.guided import GuidedBackprop, GuidedGradCAM
from pv.explain.ig import IntegratedGradients
from pv.explain.lime import Lime, superpixels
from pv.explain.overlay import colorize, heatmap_overlay, mask_image
from pv.explain.postprocess import gaussian_blur, total_variation, tv_denoise
from pv.explain.pv import PerceptionVisualizer, perception_visualization
from pv.explain.saliency import LayerRecorder, LayerSaliency, Saliency, default_layer, resolve_layer

SALIENCY: dict[str, type[Saliency]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "ig": IntegratedGradients,
    "lime": Lime,
    "guided_backprop": GuidedBackprop,
    "guided_gradcam": GuidedGradCAM,
}

__all__ = [
    "CAM", "GradCAM", "GradCAMPlusPlus", "GuidedBackprop", "GuidedGradCAM", "IntegratedGradients", "LayerRecorder",
    "LayerSaliency", "Lime", "Objective", "PerceptionVisualizer", "SALIENCY", "Saliency", "class_activation_maps",
    "class_discriminative_pv", "colorize", "default_layer", "feature_visualization", "gaussian_blur", "heatmap_overlay",
    "mask_image", "normalize_maps", "objective_value", "perception_visualization", "resolve_layer", "superpixels",
    "total_variation", "tv_denoise", "upsample_maps",
]
