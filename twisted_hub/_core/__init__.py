"""
The sans-IO core: the protocol and every decision a connection makes, on both sides, with no
reactor, no event loop, no sockets and no timers (time is passed in; timers are asked for
through each unit's IO interface). Imports nothing from Twisted, autobahn, zope, txaio,
txredisapi, prometheus_client, websockets or asyncio: the import contracts in pyproject.toml
hold it to that (docs/architecture.md).
"""
