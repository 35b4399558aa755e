"""Per-node agents: warm workers on the nodes other than the launcher head's.

    head.py      head side: AgentPool starts the agents with one MPI launch and relays runs
    node.py      node side: ``python -m balsam_futures.launcher.agents.node``, one per node
    protocol.py  what the two ends say to each other (tags, bodies, shared constants)

node.py is not imported here: it runs as ``__main__`` on the nodes, and importing the package
first would load it twice.
"""

from .head import AgentPool
from .protocol import AgentSetup

__all__ = ["AgentPool", "AgentSetup"]
