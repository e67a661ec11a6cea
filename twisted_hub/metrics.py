"""
Prometheus metrics (docs/operations.md): L{HubMetrics}, a server's
(C{HubServerFactory(metrics=...)}, C{HubService(metrics=...)}), and
L{ClientMetrics}, a Python client's own (C{HubClientOptions(metrics=...)},
for the Twisted and the asyncio client alike).

Importing this module loads neither Twisted nor C{prometheus_client}: the
asyncio client can keep its metrics without the Twisted server side.
C{prometheus_client} (the C{metrics} extra) is needed when a metric set is
built.
"""

from ._metrics.prometheus import ClientMetrics, HubMetrics

__all__ = ["ClientMetrics", "HubMetrics"]
