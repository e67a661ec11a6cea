"""
TypeScript interfaces of Python hubs, for the JavaScript client's
C{client.proxy<ChatHub>()}:

    python3 -m twisted_hub typescript myapp.hubs:ChatHub -o src/hubs.ts

writes, per hub, C{export interface ChatHub} (its C{@method}s, parameters and
results typed from the annotations, results as Promises), C{export interface
ChatReceiver} (the public methods of the hub's receiver class) and
C{export const ChatHubName = "chat"} (its wire name).  Regenerate it when the
hub changes; a type checker then catches calls that no longer fit.

Annotations map as msgpack carries them to JavaScript: C{int}/C{float} ->
C{number}, C{str} -> C{string}, C{bytes} -> C{Uint8Array}, C{bool} ->
C{boolean}, C{None} -> C{null}, C{list[X]}/C{tuple[X, ...]} -> C{X[]},
C{tuple[X, Y]} -> C{[X, Y]}, C{dict[str, X]} -> C{Record<string, X>},
C{X | None} -> C{X | null}, C{Deferred[X]} and C{async def} -> C{X};
anything else -> C{unknown}.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, get_args, get_origin

from .._hubs.hub import Hub

_SCALARS: dict[Any, str] = {
    int: "number",
    float: "number",
    str: "string",
    bytes: "Uint8Array",
    bytearray: "Uint8Array",
    bool: "boolean",
    type(None): "null",
    None: "null",
    Any: "unknown",
    object: "unknown",
    list: "unknown[]",
    tuple: "unknown[]",
    dict: "Record<string, unknown>",
}


def ts_type(annotation: Any) -> str:
    """The TypeScript type of a Python annotation (C{unknown} when there is no good one)."""
    if annotation is inspect.Parameter.empty:
        return "unknown"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = get_origin(annotation)
    arguments = get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = list(dict.fromkeys(ts_type(a) for a in arguments))
        return "unknown" if "unknown" in members else " | ".join(members)
    if origin is typing.Literal:
        return " | ".join(_literal(a) for a in arguments)
    if origin in (list, set, frozenset, collections.abc.Sequence, collections.abc.Iterable):
        return f"{_wrapped(ts_type(arguments[0]))}[]" if arguments else "unknown[]"
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return f"{_wrapped(ts_type(arguments[0]))}[]"
        return "[" + ", ".join(ts_type(a) for a in arguments) + "]" if arguments else "unknown[]"
    if origin in (dict, collections.abc.Mapping):
        value = ts_type(arguments[1]) if len(arguments) == 2 else "unknown"
        return f"Record<string, {value}>"
    if getattr(origin, "__name__", "") == "Deferred" or origin in (
        collections.abc.Awaitable, collections.abc.Coroutine,
    ):
        return ts_type(arguments[-1]) if arguments else "unknown"
    return "unknown"


def _wrapped(text: str) -> str:
    return f"({text})" if " " in text else text


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:
        # An annotation that does not resolve (a name defined elsewhere): untyped.
        return {}


_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def _name(name: str) -> str:
    return name if _IDENTIFIER.match(name) else '"' + name.replace('"', '\\"') + '"'


def _doc(function: Any, indent: str) -> list[str]:
    doc = inspect.getdoc(function)
    return _doc_lines(doc, indent)


def _class_doc(klass: type, indent: str) -> list[str]:
    """
    The class's own docstring only: C{inspect.getdoc} would hand a hub
    without one L{Hub}'s docstring (inherited C{__doc__}).
    """
    doc = klass.__dict__.get("__doc__")
    return _doc_lines(inspect.cleandoc(doc) if isinstance(doc, str) else None, indent)


def _doc_lines(doc: str | None, indent: str) -> list[str]:
    if not doc:
        return []
    first = doc.strip().split("\n\n")[0].replace("\n", " ").replace("*/", "* /")
    first = re.sub(r"[CLI]\{([^}]*)\}", r"\1", first)
    return [f"{indent}/** {first} */"]


def _signature(wire_name: str, function: Callable[..., Any], promise: bool) -> list[str]:
    hints = _hints(function)
    signature = inspect.signature(function)
    parameters: list[str] = []
    skipped: list[str] = []
    optional = False
    for parameter in list(signature.parameters.values())[1:]:  # skip self
        annotation = hints.get(parameter.name, parameter.annotation)
        kind = parameter.kind
        if kind is parameter.VAR_POSITIONAL:
            parameters.append(f"...{parameter.name}: {_wrapped(ts_type(annotation))}[]")
        elif kind in (parameter.KEYWORD_ONLY, parameter.VAR_KEYWORD):
            skipped.append(parameter.name)
        else:
            optional = optional or parameter.default is not parameter.empty
            mark = "?" if optional else ""
            parameters.append(f"{parameter.name}{mark}: {ts_type(annotation)}")
    returns = hints.get("return", signature.return_annotation)
    result = ts_type(returns)
    if inspect.iscoroutinefunction(function) and returns is inspect.Signature.empty:
        result = "unknown"
    lines = _doc(function, "  ")
    if skipped:
        lines.append(f"  // keyword-only {', '.join(skipped)}: pass with client.invoke(name, args, kwargs)")
    if promise:
        returned = f"Promise<{result}>"
    elif result in ("null", "unknown"):
        returned = "void" if result == "null" else "unknown"
    else:
        # A receiver may answer a client result asynchronously.
        returned = f"{result} | Promise<{result}>"
    lines.append(f"  {_name(wire_name)}({', '.join(parameters)}): {returned};")
    return lines


def receiver_interface_methods(receiver: type) -> list[tuple[str, Callable[..., Any]]]:
    """The public methods of a receiver class, in definition order."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(receiver.__mro__):
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and callable(value):
                found[name] = value
    return list(found.items())


def typescript_for_hubs(hub_classes: Iterable[type[Hub]], source: str = "") -> str:
    """The TypeScript module describing C{hub_classes}."""
    hub_classes = list(hub_classes)
    lines = [
        "// Generated by `python3 -m twisted_hub typescript"
        + (f" {source}" if source else "")
        + "`: do not edit, regenerate.",
    ]
    for hub_class in hub_classes:
        name = hub_class.__name__
        options = ", { receiver }" if hub_class.receiver is not None else ""
        lines.append(f"// With the twisted-hub client: connect(url, {name}Name{options}), then client.proxy<{name}>().")
    lines.append("")
    receivers_done: set[type] = set()
    for hub_class in hub_classes:
        name = hub_class.__name__
        lines.append(f"/** The wire name of {name}. */")
        lines.append(f"export const {name}Name = {_literal(hub_class.hub_name)};")
        lines.append("")
        lines.extend(_class_doc(hub_class, ""))
        lines.append(f"export interface {name} {{")
        for wire_name, described in hub_class.hub_methods.items():
            lines.extend(_signature(wire_name, described.function, promise=True))
        lines.append("}")
        lines.append("")
        receiver = hub_class.receiver
        if receiver is not None and receiver not in receivers_done:
            receivers_done.add(receiver)
            lines.extend(_class_doc(receiver, ""))
            lines.append(f"export interface {receiver.__name__} {{")
            for method_name, function in receiver_interface_methods(receiver):
                lines.extend(_signature(method_name, function, promise=False))
            lines.append("}")
            lines.append("")
    return "\n".join(lines)
