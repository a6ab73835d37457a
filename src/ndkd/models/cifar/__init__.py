"""CIFAR model zoo (32x32 inputs; any resolution works thanks to adaptive pooling)."""

from ndkd.models.cifar import resnet  # noqa: F401  (registers the models)
