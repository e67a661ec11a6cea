"""Filters configured in a TOML file, through `twistd -n hub` as a child process, over loopback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest_twisted

from twisted_hub import ErrorCode, HubError, connect

from ._twistd import started_port, twistd_hub


@pytest_twisted.ensureDeferred
async def test_rate_limit_timeout_log_and_own_filter_from_the_config() -> None:
    """The config's filters run around real calls: the own filter, the rate limit (counted in /metrics), the timeout, the log."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    directory = tempfile.TemporaryDirectory()
    config = Path(directory.name) / "hub.toml"
    config.write_text(
        'listen = ["tcp:0:interface=127.0.0.1"]\n'
        'hubs = ["tests.helpers.filters:FilteredEchoHub"]\n'
        "metrics = true\n"
        "call-rate = 1\n"
        "call-burst = 3\n"
        "call-timeout = 0.5\n"
        "log-calls = true\n"
        'filters = ["tests.helpers.filters:Tagged"]\n'
    )
    child = twistd_hub(reactor, "--config", str(config))
    client = None
    try:
        port = await started_port(child, reactor)
        await child.wait_for(r"filters around every hub call, outermost first: RateLimit\(1, burst=3\), "
                             r"CallLog\(level=info, arguments=False\), CallTimeout\(0\.5\), Tagged\('filtered'\)",
                             reactor, 10)
        client = await connect(f"ws://127.0.0.1:{port}/hub", "echo", clock=reactor, timeout=10)
        # the own filter renames old_echo to echo and tags the result
        assert await client.call("old_echo", [1, 2]) == {"tag": "filtered", "result": [1, 2]}
        # the call timeout: never answers by itself; the filter answers after 0.5 s
        try:
            await client.call("never")
        except HubError as e:
            assert e.code == ErrorCode.TIMEOUT, e
            assert e.message == "echo.never did not finish within 0.5 s", e
        else:
            raise AssertionError("never answered")
        # the bucket (3 at once, 1/s) is nearly empty: of six calls started together most are refused
        calls = [client.call("echo", value) for value in range(6)]
        outcomes = []
        for call in calls:
            try:
                outcomes.append(await call)
            except HubError as e:
                outcomes.append(e.code)
        refused = outcomes.count(ErrorCode.RATE_LIMITED)
        assert refused >= 3 and outcomes[0] == {"tag": "filtered", "result": 0}, outcomes
        response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
        metrics = (await readBody(response)).decode()
        assert f'twisted_hub_calls_total{{hub="echo",method="echo",outcome="rate-limited"}} {refused}.0' in metrics
        assert 'twisted_hub_calls_total{hub="echo",method="never",outcome="timeout"} 1.0' in metrics
        # the call log
        await child.wait_for(r"\[twisted_hub\.calls#info\] echo\.echo call \d+ on \S+: ok in [\d.]+ ms", reactor, 10)
        await child.wait_for(r"\[twisted_hub\.calls#info\] echo\.never call \d+ on \S+: timeout in \d+\.\d ms",
                             reactor, 10)
        await client.disconnect()
        client = None
    finally:
        if client is not None:
            client.transport.abortConnection()
        await child.stop(reactor)
        directory.cleanup()
