"""Models: a registry of named constructors, feature taps and weight loading."""

from ndkd.models import cifar  # noqa: F401  (registers the CIFAR zoo)
from ndkd.models.features import FeatureTap, TapOutput, embedding_dim, find_classifier
from ndkd.models.registry import canonical_name, create_model, list_models, register_model
from ndkd.models.weights import load_weights

__all__ = [
    "FeatureTap",
    "TapOutput",
    "canonical_name",
    "create_model",
    "embedding_dim",
    "find_classifier",
    "list_models",
    "load_weights",
    "register_model",
]
