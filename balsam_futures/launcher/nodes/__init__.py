"""Node discovery, one module per batch system; see ``base.py`` for the flow and rules."""

from .base import (
    DETECTION_ORDER,
    NodeList,
    NodeSpec,
    detect_node_list,
    discover_nodes,
    node_list_class,
    this_node_name,
)
from .hostlist import expand_hostlist

__all__ = ["DETECTION_ORDER", "NodeList", "NodeSpec", "detect_node_list", "discover_nodes",
           "expand_hostlist", "node_list_class", "this_node_name"]
