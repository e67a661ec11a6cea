"""
The client conformance suite (issue 18 item 6): one list of scenarios
(L{tests.conformance.scenarios}) run against the Twisted, the asyncio and
the JavaScript client, each by its driver, against a scripted server and
a real C{twistd hub}; docs/clients.md shows the matrix its results make.
"""
