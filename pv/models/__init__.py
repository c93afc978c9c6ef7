"""nn.Modules: what is computed."""
from pv.models.classifier import Classifier, layer_names, truncate
from pv.models.decoder import Decoder, load_decoder
from pv.models.encoder import FrozenEncoder
from pv.models.weights import WeightsUnavailableError, build_torchvision_model

__all__ = ["Classifier", "Decoder", "FrozenEncoder", "WeightsUnavailableError", "build_torchvision_model", "layer_names", "load_decoder", "truncate"]
