"""
The metrics modules' names in their old place: the status-page numbers are
in L{twisted_hub._stats}, the Prometheus collectors and the core's observers
in L{twisted_hub._prometheus}.  Kept only so that C{twisted_hub/__init__.py}
(another branch rewrites it) goes on importing C{HubMetrics} and
C{ClientMetrics} from here; import from the two modules instead.
"""

from ._prometheus import ClientMetrics, HubLabelMetrics, HubMetrics, SessionMetrics, backplane_connected
from ._stats import HeartbeatWindow, RecentDisconnects, TrafficTotals

__all__ = [
    "ClientMetrics", "HeartbeatWindow", "HubLabelMetrics", "HubMetrics", "RecentDisconnects", "SessionMetrics",
    "TrafficTotals", "backplane_connected",
]
