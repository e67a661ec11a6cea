"""
What every Twisted layer shares: twisted-hub's log level and the core's log on twisted.logger,
handing a connection over to ClientService once it is ready, the deprecated reactor= keyword.
"""
