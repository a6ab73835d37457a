"""Distillation losses as pure functions of tensors, each returning a scalar tensor.

Weights, warm-up and schedules belong to the distillers (:mod:`ndkd.distillers`), never to a loss.
"""

from ndkd.losses.feature import fitnet_loss, hcl_loss, pefd_loss
from ndkd.losses.logit import kd_loss
from ndkd.losses.nd import nd_loss

__all__ = ["fitnet_loss", "hcl_loss", "kd_loss", "nd_loss", "pefd_loss"]
