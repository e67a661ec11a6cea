"""
The Prometheus collectors: the observers of the sans-IO core (calls, sessions) and the client's
metrics.
"""
