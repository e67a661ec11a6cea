"""
The hub layer: what application code writes and sees (hubs, methods, receivers, groups,
connection context, filters, authentication and authorization).
"""
