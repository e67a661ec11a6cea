"""Every example in docs/filters.md runs as written: the hub example, its log line, the twistd command and config."""

from __future__ import annotations

import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub.filters import CallLog, CallTimeout, RateLimit
from twisted_hub.tap import Options

from ._docs import named_blocks
from .helpers.filters import Tagged

DOC = "docs/filters.md"
#: the example's module names, for ones these tests can import
STAND_INS = {
    "myapp.notes:NotesHub": "tests.helpers.filters:FilteredEchoHub",
    "myapp.filters:Audit": "tests.helpers.filters:Tagged",
}


def code(name: str) -> str:
    return named_blocks(DOC)[name][1]


def stand_in(text: str) -> str:
    for name, replacement in STAND_INS.items():
        text = text.replace(name, replacement)
    return text


class FiltersDocTests(SynchronousTestCase):
    def test_every_block_is_known(self) -> None:
        """Each block of the page is one these tests run."""
        self.assertEqual(
            set(named_blocks(DOC)), {"filters-example", "call-log-line", "filters-twistd", "filters-config"}
        )

    def test_example_runs_and_logs_the_line_shown(self) -> None:
        """The complete example runs (its asserts hold), and CallLog wrote the line the page shows."""
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        exec(compile(code("filters-example"), DOC, "exec"), namespace)
        lines = [formatEvent(e) for e in logs if e.get("log_namespace") == "twisted_hub.calls"]
        self.assertEqual(len(lines), 7)
        shown = code("call-log-line").strip()
        connection_id = namespace["server"].connections[0].hub.connection.id
        refused = [line.replace(connection_id, "ID") for line in lines if "rate-limited" in line]
        self.assertEqual(refused, [re.sub(r"on \S+:", "on ID:", shown, count=1)])

    def check_filters(self, options: Options) -> None:
        filters = options["filters"]
        self.assertEqual([type(f) for f in filters], [RateLimit, CallLog, CallTimeout, Tagged])
        self.assertEqual((filters[0].rate, filters[0].burst, filters[2].seconds), (20.0, 40.0, 30.0))

    def test_twistd_command(self) -> None:
        """The twistd command line gives the filters the page says, in that order."""
        argv = shlex.split(stand_in(code("filters-twistd")))
        options = Options()
        options.parseOptions(argv[argv.index("hub") + 1:])
        self.check_filters(options)

    def test_config_file(self) -> None:
        """The TOML example gives the same filters."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hub.toml"
        path.write_text(stand_in(code("filters-config")))
        options = Options()
        options.parseOptions(["--config", str(path)])
        self.check_filters(options)
