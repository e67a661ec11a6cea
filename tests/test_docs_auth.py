"""Every example in docs/auth.md runs as written: the complete example, the twistd command and the config file."""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import DisconnectKind
from twisted_hub.tap import Options

from ._docs import named_blocks
from .helpers.auth import ExpiringAuthenticator

DOC = "docs/auth.md"
#: the example's module names, for ones these tests can import
STAND_INS = {
    "myapp.notes:NotesHub": "tests.helpers.auth:WhoAmIHub",
    "myapp.auth:Accounts": "tests.helpers.auth:ExpiringAuthenticator",
}


def code(name: str) -> str:
    return named_blocks(DOC)[name][1]


def stand_in(text: str) -> str:
    for name, replacement in STAND_INS.items():
        text = text.replace(name, replacement)
    return text


class AuthDocTests(SynchronousTestCase):
    def test_every_block_is_known(self) -> None:
        """Each block of the page is one these tests run."""
        self.assertEqual(set(named_blocks(DOC)), {"auth-example", "auth-twistd", "auth-config"})

    def test_example_runs(self) -> None:
        """The complete example runs and its asserts hold: refusals, policies, a refresh across key rotation, an expiry."""
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        exec(compile(code("auth-example"), DOC, "exec"), namespace)
        self.assertEqual(namespace["bob"].disconnect_reason.kind, DisconnectKind.TOKEN_EXPIRED)
        self.assertTrue(namespace["ann"].is_connected)

    def check(self, options: Options) -> None:
        self.assertIsInstance(options["authenticator"], ExpiringAuthenticator)
        self.assertEqual(options["auth-timeout"], 3.0)
        self.assertTrue(options["deny-by-default"])

    def test_twistd_command(self) -> None:
        """The twistd command line loads the authenticator (a class, made) with its deadline and deny-by-default."""
        argv = shlex.split(stand_in(code("auth-twistd")))
        options = Options()
        options.parseOptions(argv[argv.index("hub") + 1:])
        self.check(options)

    def test_config_file(self) -> None:
        """The TOML example gives the same settings."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hub.toml"
        path.write_text(stand_in(code("auth-config")))
        options = Options()
        options.parseOptions(["--config", str(path)])
        self.check(options)
