"""Distillers: the base contract, the registry, every method, and the ND regulariser ("++")."""

from ndkd.distillers import ce_only, diffkd, dist, dkd, fitnet, kd, pefd, reviewkd  # noqa: F401  (register the methods)
from ndkd.distillers.base import Distiller, build_distiller
from ndkd.distillers.nd import NDRegularizer
from ndkd.distillers.registry import get_method, list_methods, register_distiller

__all__ = ["Distiller", "NDRegularizer", "build_distiller", "get_method", "list_methods", "register_distiller"]
