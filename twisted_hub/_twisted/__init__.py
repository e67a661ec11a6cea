"""
The Twisted adapters: autobahn bytes and Twisted timers for the sans-IO core (server, client,
reconnecting client, web resource, admission, dispatch of hub methods, heartbeat timers, fast
path, compression).
"""
