"""
Operations glue: the service (listening, graceful shutdown), /metrics, /health and the status
page, static files and the JavaScript client, worker processes, loading hubs by name, TypeScript
generation.
"""
