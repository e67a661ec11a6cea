"""
The asyncio client's own parts (imports no Twisted): its streams.
"""
