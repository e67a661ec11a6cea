"""The hub layer alone: registration, decorators, argument checks, receivers' interface, groups."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import (
    ErrorCode,
    Hub,
    HubArgumentError,
    HubServerFactory,
    HubUsageError,
    InvalidArguments,
    RefuseConnection,
    hub,
    method,
)
from twisted_hub._base_error import HubAttributeError
from twisted_hub._hub import GroupRegistry
from twisted_hub._receivers import receiver_methods
from twisted_hub.testing import HubTestServer


class Member:
    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id


class RegistrationTests(SynchronousTestCase):
    def test_default_name(self) -> None:
        """A hub's default name is its class name, lower-cased, without a trailing 'hub'."""

        class GameHub(Hub):
            pass

        class Lobby(Hub):
            pass

        class Hub2(Hub):
            pass

        self.assertEqual((GameHub.hub_name, Lobby.hub_name, Hub2.hub_name), ("game", "lobby", "hub2"))

    def test_decorator_and_attributes(self) -> None:
        """@hub sets name, receiver and concurrency; class attributes say the same."""

        class Receiver:
            def ping(self) -> None: ...

        @hub("named", receiver=Receiver, concurrent=True)
        class Decorated(Hub):
            pass

        class Attributed(Hub):
            hub_name = "attr"
            receiver = Receiver
            concurrent = True

        for cls, name in ((Decorated, "named"), (Attributed, "attr")):
            self.assertEqual((cls.hub_name, cls.receiver, cls.concurrent), (name, Receiver, True))
        self.assertFalse(Hub.concurrent)

    def test_methods_registered(self) -> None:
        """Only @method functions are exposed, under their own or the given name."""

        class H(Hub):
            @method
            def a(self) -> None: ...

            @method("b_wire")
            def b(self) -> None: ...

            def helper(self) -> None: ...

        self.assertEqual(sorted(H.hub_methods), ["a", "b_wire"])

    def test_inheritance(self) -> None:
        """Subclasses inherit exposed methods, may override them and may hide them."""

        class Base(Hub):
            @method
            def shared(self) -> str:
                return "base"

            @method
            def hidden(self) -> None: ...

        class Child(Base):
            @method
            def shared(self) -> str:
                return "child"

            hidden = None  # type: ignore[assignment]

        self.assertEqual(sorted(Child.hub_methods), ["shared"])
        self.assertEqual(Child.hub_methods["shared"].function(None), "child")
        self.assertEqual(sorted(Base.hub_methods), ["hidden", "shared"])

    def test_factory_registry(self) -> None:
        """The factory refuses duplicate names and no hubs; a mapping renames hubs."""

        class A(Hub):
            pass

        class A2(Hub):
            hub_name = "a"

        self.assertRaises(ValueError, HubServerFactory, [A, A2])
        self.assertRaises(ValueError, HubServerFactory, [])
        factory = HubServerFactory({"x": A, "y": A2})
        self.assertEqual(sorted(factory.runtimes), ["x", "y"])
        self.assertIs(factory.route("/hub/y").hub_class, A2)  # type: ignore[union-attr]
        self.assertIsNone(factory.route("/hub/z"))

    def test_refuse_connection_defaults(self) -> None:
        """RefuseConnection defaults to 403 'refused'."""
        refusal = RefuseConnection()
        self.assertEqual((refusal.status, refusal.reason), (403, "refused"))


class ArgumentCheckTests(SynchronousTestCase):
    def spec(self) -> Any:
        class H(Hub):
            @method
            def f(self, i: int, x: float, s: str, b: bytes, flag: bool, items: list, mapping: dict,
                  anything: Any = None, *, k: int = 0) -> None: ...

        return H.hub_methods["f"]

    GOOD = [1, 2.5, "s", b"b", True, [1], {"a": 1}]

    def test_good_arguments(self) -> None:
        """Arguments of the annotated types pass; float accepts int; unannotated take anything."""
        spec = self.spec()
        self.assertIsNone(spec.check(self.GOOD + [object()], {"k": 3}))  # raises InvalidArguments on a mismatch
        self.assertIsNone(spec.check([1, 2, "s", b"b", False, [], {}], None))

    def test_each_wrong_type(self) -> None:
        """Each annotated positional argument of a wrong type raises InvalidArguments naming it."""
        spec = self.spec()
        wrong = ["1", "2", 3, "b", 1, (1,), [1]]
        names = ["i", "x", "s", "b", "flag", "items", "mapping"]
        for position, (value, name) in enumerate(zip(wrong, names)):
            args = list(self.GOOD)
            args[position] = value
            with self.assertRaises(InvalidArguments) as caught:
                spec.check(args, None)
            self.assertEqual(caught.exception.code, ErrorCode.INVALID_ARGUMENTS)
            self.assertIn(repr(name), caught.exception.message)

    def test_bool_is_not_int(self) -> None:
        """True is refused where an int or float is expected."""
        spec = self.spec()
        for position in (0, 1):
            args = list(self.GOOD)
            args[position] = True
            self.assertRaises(InvalidArguments, spec.check, args, None)

    def test_keyword_types(self) -> None:
        """Keyword arguments are type-checked too, keyword-only included."""
        spec = self.spec()
        self.assertRaises(InvalidArguments, spec.check, [], {"i": "x"})
        self.assertRaises(InvalidArguments, spec.check, self.GOOD, {"k": "x"})
        spec.check([], {"anything": object()})

    def test_explain_type_error(self) -> None:
        """explain_type_error tells binding errors (caller's fault) from errors inside the method."""
        spec = self.spec()
        self.assertIsNone(spec.explain_type_error(self.GOOD, None))
        self.assertIn("missing", spec.explain_type_error([], None))
        self.assertIsNotNone(spec.explain_type_error(self.GOOD, {"nope": 1}))

    def test_string_annotations(self) -> None:
        """Annotations are strings here (from __future__ import annotations) and are still checked."""

        class H(Hub):
            @method
            def f(self, n: int) -> None: ...

        self.assertRaises(InvalidArguments, H.hub_methods["f"].check, ["x"], None)


class UnresolvableAnnotationTests(SynchronousTestCase):
    def test_checks_survive_an_unresolvable_annotation(self) -> None:
        """One annotation naming a function-local class does not switch off the other checks."""

        class Local:
            pass

        class LocalHub(Hub):
            hub_name = "local"

            @method
            def first(self, a: int, b: Local) -> int:
                return a

        self.assertEqual([(name, types) for _, name, types in LocalHub.hub_methods["first"].checks], [("a", (int,))])
        server = HubTestServer([LocalHub])
        conn = server.connect("local")
        d = conn.client.call("first", "not an int", 1)
        server.flush()
        self.assertEqual(self.failureResultOf(d).value.code, "invalid-arguments")


class ReceiverInterfaceTests(SynchronousTestCase):
    def test_receiver_methods(self) -> None:
        """A receiver interface's public methods are what may be called; None allows anything."""

        class R:
            def said(self) -> None: ...

            def _private(self) -> None: ...

            value = 3

        self.assertEqual(receiver_methods(R), frozenset({"said"}))
        self.assertIsNone(receiver_methods(None))

    def test_undeclared_receiver_method(self) -> None:
        """Calling a receiver method the interface lacks raises AttributeError at the call site."""

        class R:
            def said(self, text: str) -> None: ...

        @hub("strict", receiver=R)
        class Strict(Hub):
            @method
            def typo(self) -> None:
                self.clients.caller.sayd("x")

            @method
            def private(self) -> None:
                self.clients.caller._secret()

        server = HubTestServer([Strict])
        conn = server.connect("strict")
        for name in ("typo", "private"):
            d = conn.client.call(name)
            server.flush()
            self.assertEqual(self.failureResultOf(d).value.code, ErrorCode.INTERNAL)
        errors = self.flushLoggedErrors(AttributeError)
        self.assertEqual(len(errors), 2)
        for error in errors:  # a TwistedHubError (a usage error of ours) that is also an AttributeError
            self.assertIsInstance(error.value, HubUsageError)
            self.assertIn("receiver has no method", str(error.value))
        self.assertTrue(all(isinstance(error.value, HubAttributeError) for error in errors))

    def test_hasattr_on_a_receiver_proxy(self) -> None:
        """hasattr() on a receiver proxy is False for a method the interface lacks (HubAttributeError is an AttributeError)."""

        class R:
            def said(self, text: str) -> None: ...

        @hub("probe", receiver=R)
        class Probe(Hub):
            @method
            def probe(self) -> list[bool]:
                return [hasattr(self.clients.caller, "said"), hasattr(self.clients.caller, "sayd")]

        server = HubTestServer([Probe])
        conn = server.connect("probe")
        d = conn.client.call("probe")
        server.flush()
        self.assertEqual(self.successResultOf(d), [True, False])

    def test_unencodable_receiver_argument(self) -> None:
        """A receiver call whose argument msgpack cannot encode raises HubArgumentError (a TypeError too) in the hub method."""
        raised: list[BaseException] = []

        @hub("sender")
        class Sender(Hub):
            @method
            def send(self) -> None:
                try:
                    self.clients.caller.said(object())
                except HubArgumentError as e:
                    raised.append(e)
                    raise

        server = HubTestServer([Sender])
        conn = server.connect("sender")
        d = conn.client.call("send")
        server.flush()
        self.assertEqual(self.failureResultOf(d).value.code, ErrorCode.INTERNAL)
        self.assertEqual(len(self.flushLoggedErrors(HubArgumentError)), 1)
        self.assertEqual(len(raised), 1)
        self.assertIsInstance(raised[0], TypeError)
        self.assertIn("receiver call 'said': an argument cannot be encoded", str(raised[0]))
        self.assertIsInstance(raised[0].__cause__, TypeError)


class GroupRegistryTests(SynchronousTestCase):
    def test_add_remove_count_members(self) -> None:
        """The registry keeps members in joining order and counts them; joining twice changes nothing."""
        groups = GroupRegistry()
        a, b = Member("a"), Member("b")
        groups.add("g", b)
        groups.add("g", a)
        groups.add("g", b)
        self.assertEqual([m.connection_id for m in groups.members_of("g")], ["b", "a"])
        self.assertEqual(groups.count("g"), 2)
        groups.remove("g", b)
        self.assertEqual(groups.count("g"), 1)
        groups.remove("g", b)  # not a member: no-op
        groups.remove("nowhere", a)
        self.assertEqual(groups.count("g"), 1)

    def test_empty_groups_disappear(self) -> None:
        """A group with no members left is forgotten (no leak of names)."""
        groups = GroupRegistry()
        a = Member("a")
        groups.add("g", a)
        groups.remove("g", a)
        self.assertEqual(groups.names(), [])
        self.assertEqual(groups.groups_of("a"), frozenset())
        self.assertEqual(groups.members_of("g"), [])

    def test_remove_everywhere(self) -> None:
        """remove_everywhere takes a connection out of all its groups and no one else."""
        groups = GroupRegistry()
        a, b = Member("a"), Member("b")
        for name in ("x", "y", "z"):
            groups.add(name, a)
        groups.add("x", b)
        self.assertEqual(groups.groups_of("a"), frozenset({"x", "y", "z"}))
        groups.remove_everywhere(a)
        self.assertEqual(groups.names(), ["x"])
        self.assertEqual([m.connection_id for m in groups.members_of("x")], ["b"])
        self.assertEqual(groups.groups_of("a"), frozenset())


class DependencyInjectionTests(SynchronousTestCase):
    """Hubs get their dependencies through functools.partial, not class-level state."""

    class Store:
        def __init__(self) -> None:
            self.saved: list[str] = []

    class NotesHub(Hub):
        hub_name = "notes"

        def __init__(self, store: DependencyInjectionTests.Store, prefix: str = "") -> None:
            self.store = store
            self.prefix = prefix

        @method
        def save(self, text: str) -> int:
            self.store.saved.append(self.prefix + text)
            return len(self.store.saved)

    def test_each_factory_gives_its_own_dependencies(self) -> None:
        """Two servers of the same hub class with different stores never share state; every connection gets a fresh instance."""
        from functools import partial

        first_store, second_store = self.Store(), self.Store()
        first = HubTestServer([partial(self.NotesHub, first_store, prefix="a:")])
        second = HubTestServer({"notes": partial(self.NotesHub, second_store)})
        one, two = first.connect("notes"), first.connect("notes")
        other = second.connect("notes")
        results = [one.client.call("save", "x"), two.client.call("save", "y"), other.client.call("save", "z")]
        first.flush()
        second.flush()
        self.assertEqual([self.successResultOf(r) for r in results], [1, 2, 1])
        self.assertEqual((first_store.saved, second_store.saved), (["a:x", "a:y"], ["z"]))
        self.assertIsNot(one.hub, two.hub)
        self.assertIs(one.hub.store, two.hub.store)  # type: ignore[attr-defined]

    def test_anything_else_is_refused_up_front(self) -> None:
        """A plain callable (whose hub class cannot be known) or a non-hub class is a TypeError at construction."""
        from functools import partial

        for bad in (lambda: self.NotesHub(self.Store()), partial(dict), object):
            with self.assertRaises(TypeError):
                HubServerFactory([bad])  # type: ignore[list-item]
