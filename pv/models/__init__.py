"""nn.Modules and their loading: classifiers, the frozen encoder, the decoder. No Lightning here."""
from pv.models.checkpoint import load_checkpoint
from pv.models.classifier import Classifier, layer_names, pooled_linear_head, probabilities, trunk_of, truncate
from pv.models.decoder import Decoder, load_decoder
from pv.models.encoder import FrozenEncoder
from pv.models.fingerprint import check_encoder_match, encoder_fingerprint
from pv.models.loading import TorchvisionClassifier, WrappedClassifier, load_classifier, save_classifier
from pv.models.weights import WeightsUnavailableError, build_torchvision_model
from pv.models.zoo import ModelSpec, model_spec

__all__ = [
    "Classifier", "Decoder", "FrozenEncoder", "ModelSpec", "TorchvisionClassifier", "WeightsUnavailableError", "WrappedClassifier",
    "build_torchvision_model", "model_spec", "save_classifier",
    "check_encoder_match", "encoder_fingerprint", "layer_names", "load_checkpoint", "load_classifier", "load_decoder",
    "pooled_linear_head", "probabilities", "trunk_of", "truncate",
]
