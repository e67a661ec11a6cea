"""
Filters: code around every hub call and around connect and disconnect
(docs/filters.md), and the shipped ones (L{RateLimit}, L{CallLog},
L{CallTimeout}).
"""

from ._filters import CallLog, CallTimeout, ConnectionEvent, HubCall, HubFilter, RateLimit

__all__ = ["CallLog", "CallTimeout", "ConnectionEvent", "HubCall", "HubFilter", "RateLimit"]
