"""Exact per-layer MACs, parameters, memory and receptive field from a jaxpr.

    >>> import xnn.cost
    >>> rep = xnn.cost.analyze_model("resnet20")
    >>> rep.params, rep.macs, rep.receptive_field

See docs/cost.md for the counting rules and their conventions.
"""

from xnn.cost.analysis import CostReport, Layer, abstract_model, analyze, analyze_model, analyze_module
from xnn.cost.levels import Level, levels
from xnn.cost.receptive_field import ReceptiveFieldError, effective_receptive_field, erf_map, erf_numbers
from xnn.cost.roofline import DEVICES, Device, get_device
from xnn.cost.rules import RULES, Counts

__all__ = ["CostReport", "Layer", "analyze", "analyze_model", "analyze_module", "abstract_model", "Level", "levels",
           "ReceptiveFieldError", "effective_receptive_field", "erf_map", "erf_numbers", "DEVICES", "Device",
           "get_device", "RULES", "Counts"]
