"""Models: a registry of named constructors, feature taps and weight loading."""

from ndkd.models import cifar, imagenet  # noqa: F401  (registers the zoo)
from ndkd.models.features import FeatureTap, Stage, TapOutput, embedding_dim, find_classifier, model_stages
from ndkd.models.registry import canonical_name, create_model, list_models, register_model
from ndkd.models.weights import load_weights

__all__ = [
    "FeatureTap",
    "Stage",
    "TapOutput",
    "canonical_name",
    "create_model",
    "embedding_dim",
    "find_classifier",
    "list_models",
    "model_stages",
    "load_weights",
    "register_model",
]
