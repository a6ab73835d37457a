"""ImageNet-scale models: torchvision's ResNets and MobileNetV2 (``torchvision/<name>``), the papers'
MobileNetV1 (``mobilenetv1``) and any timm model (``timm/<name>``, when timm is installed)."""

from ndkd.models.imagenet import mobilenetv1, torchvision_models  # noqa: F401  (registers the models)
