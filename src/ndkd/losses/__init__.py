"""Distillation losses as pure functions of tensors, each returning a scalar tensor.

Weights, warm-up and schedules belong to the distillers (:mod:`ndkd.distillers`), never to a loss.
"""

from ndkd.losses.feature import fitnet_loss, hcl_loss, pefd_loss
from ndkd.losses.logit import dist_loss, dkd_loss, kd_loss
from ndkd.losses.nd import nd_cosine_loss, nd_infonce_loss, nd_loss, norm_l2_loss, sifn_loss

__all__ = [
    "dist_loss",
    "dkd_loss",
    "fitnet_loss",
    "hcl_loss",
    "kd_loss",
    "nd_cosine_loss",
    "nd_infonce_loss",
    "nd_loss",
    "norm_l2_loss",
    "pefd_loss",
    "sifn_loss",
]
