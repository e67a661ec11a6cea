"""The demo chat hub's rooms and members, and the demo page's snippet (twisted_hub.demo, static/demo.html)."""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_hub.demo import DEMO_HUBS, ChatHub
from twisted_hub.testing import HubTestServer, TestConnection


class Recorder:
    """A chat receiver that writes down what the hub told it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def said(self, room: str, user: str, text: str) -> None:
        self.events.append(("said", room, user, text))

    def joined(self, room: str, user: str) -> None:
        self.events.append(("joined", room, user))

    def left(self, room: str, user: str) -> None:
        self.events.append(("left", room, user))


class ChatMembersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = HubTestServer(list(DEMO_HUBS))

    def member(self) -> tuple[TestConnection, Recorder]:
        receiver = Recorder()
        connection = self.server.connect("chat", receiver=receiver)
        self.successResultOf(connection.ready)
        return connection, receiver

    def call(self, connection: TestConnection, method: str, *args: Any) -> Any:
        result = connection.client.call(method, *args)
        self.server.flush()
        return self.successResultOf(result)

    def test_members_in_joining_order(self) -> None:
        """members(room) names the room's members in joining order, a name twice if two connections use it."""
        ann, _ = self.member()
        bob, _ = self.member()
        other, _ = self.member()
        self.assertEqual(self.call(ann, "members", "lobby"), [])
        self.assertEqual(self.call(ann, "join", "lobby", "ann"), 1)
        self.assertEqual(self.call(bob, "join", "lobby", "bob"), 2)
        self.assertEqual(self.call(other, "join", "lobby", "ann"), 3)
        self.assertEqual(self.call(other, "join", "elsewhere", "zed"), 1)
        self.assertEqual(self.call(bob, "members", "lobby"), ["ann", "bob", "ann"])
        self.assertEqual(self.call(bob, "members", "elsewhere"), ["zed"])

    def test_leave_and_disconnect_leave_the_list(self) -> None:
        """leave() and a lost connection take the member out of members() and tell the others left(...)."""
        ann, ann_heard = self.member()
        bob, _ = self.member()
        carl, _ = self.member()
        for connection, name in ((ann, "ann"), (bob, "bob"), (carl, "carl")):
            self.call(connection, "join", "lobby", name)
        self.call(bob, "leave", "lobby")
        self.assertEqual(self.call(ann, "members", "lobby"), ["ann", "carl"])
        carl.drop()
        self.server.flush()
        self.assertEqual(self.call(ann, "members", "lobby"), ["ann"])
        self.assertEqual(ann_heard.events[-2:], [("left", "lobby", "bob"), ("left", "lobby", "carl")])
        # Nothing of the gone connections is kept by the hub's name index.
        self.assertEqual(set(ChatHub._rooms_by_connection), {ann.hub.connection.id})

    def test_joining_again_is_quiet_and_a_new_name_replaces_the_old(self) -> None:
        """Joining a room again under the same name tells nobody; under a new name the others hear left, then joined."""
        ann, _ = self.member()
        bob, bob_heard = self.member()
        self.call(bob, "join", "lobby", "bob")
        self.call(ann, "join", "lobby", "ann")
        heard = len(bob_heard.events)
        self.assertEqual(self.call(ann, "join", "lobby", "ann"), 2)
        self.assertEqual(len(bob_heard.events), heard)
        self.call(ann, "join", "lobby", "anna")
        self.assertEqual(bob_heard.events[heard:], [("left", "lobby", "ann"), ("joined", "lobby", "anna")])
        self.assertEqual(self.call(bob, "members", "lobby"), ["bob", "anna"])

    def tearDown(self) -> None:
        for connection in self.server.connections:
            connection.drop()
        self.server.flush()
        self.assertEqual(ChatHub._rooms_by_connection, {})


class DemoPageSnippetTests(SynchronousTestCase):
    def test_snippet_calls_chat_hub_methods(self) -> None:
        """Every hub method the demo page's "how this page calls the hub" snippet calls is a method of the chat hub."""
        page = files("twisted_hub").joinpath("static", "demo.html").read_text("utf-8")
        snippet = page.split('<pre id="snippet"><code>', 1)[1].split("</code></pre>", 1)[0]
        called = set(re.findall(r'client\.call\("(\w+)"', snippet))
        self.assertEqual(called, {"join", "members", "say", "leave"})
        self.assertLessEqual(called, set(ChatHub.hub_methods))
        # The page itself calls what the snippet shows.
        script = page.split('<script type="module">', 1)[1]
        self.assertEqual(set(re.findall(r'client\.call\("(\w+)"', script)), called)
