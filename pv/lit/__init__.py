"""How things are trained: LightningModules and callbacks."""
from pv.lit.callbacks import PVFigure, ReconstructionGrid
from pv.lit.classifier_module import ClassifierModule
from pv.lit.decoder_module import DecoderModule

__all__ = ["ClassifierModule", "DecoderModule", "PVFigure", "ReconstructionGrid"]
