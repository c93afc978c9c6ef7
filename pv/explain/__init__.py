"""Explanations: saliency methods, Perception Visualization, feature visualization (no argparse, no Lightning).

`build_saliency(name, model, **options)` gives a method from `SALIENCY`, called as
`method(images, targets)` -> maps (B, 1, H, W) in [0, 1]; `method.attribute(images, targets)` gives
the raw attribution. `PerceptionVisualizer` is the one PV pipeline.
"""
from pv.explain.cam import NORMALIZATIONS, class_activation_maps, normalize_maps, upsample_maps
from pv.explain.class_pv import class_discriminative_pv
from pv.explain.combine import perception_visualization
from pv.explain.featvis import Objective, feature_visualization, objective_value
from pv.explain.gradcam import CAM, GradCAM, GradCAMPlusPlus, MeanActivation
from pv.explain.guided import GuidedBackprop, GuidedGradCAM
from pv.explain.ig import IntegratedGradients
from pv.explain.lime import Lime, superpixels
from pv.explain.overlay import colorize, heatmap_overlay, mask_image
from pv.explain.postprocess import gaussian_blur, total_variation, tv_denoise
from pv.explain.pv import PerceptionVisualizer
from pv.explain.registry import SALIENCY, build_saliency
from pv.explain.saliency import LayerRecorder, LayerSaliency, Saliency, default_layer, resolve_layer

__all__ = [
    "CAM", "GradCAM", "GradCAMPlusPlus", "GuidedBackprop", "GuidedGradCAM", "IntegratedGradients", "LayerRecorder",
    "LayerSaliency", "Lime", "MeanActivation", "NORMALIZATIONS", "Objective", "PerceptionVisualizer", "SALIENCY", "Saliency",
    "build_saliency", "class_activation_maps", "class_discriminative_pv", "colorize", "default_layer", "feature_visualization",
    "gaussian_blur", "heatmap_overlay", "mask_image", "normalize_maps", "objective_value", "perception_visualization",
    "resolve_layer", "superpixels", "total_variation", "tv_denoise", "upsample_maps",
]
