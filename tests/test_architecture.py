"""
docs/architecture.md is the architecture, and CI holds the code to it.

Its layers table is the import-linter "layers" contract of pyproject.toml
(`[tool.importlinter]`, which `lint-imports` checks in .ci/run and
L{ContractTests.test_the_contracts_hold} runs here); its list of forbidden
imports is the "forbidden" contracts; its module table names every module of the
package once, in the layer its folder puts it in.  Change the contracts and the
doc together, or these tests fail.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "twisted_hub"
#: The most lines a class of the sans-IO core may have (issue 23: "no class in the core over ~250 lines").
CORE_CLASS_LINES = 250


def contracts() -> list[dict[str, Any]]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        found: list[dict[str, Any]] = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return found


def contract_layers() -> list[set[str]]:
    """The layers contract, top first: each layer as the set of its modules."""
    (layers,) = [c for c in contracts() if c["type"] == "layers"]
    return [{name.strip() for name in layer.split("|")} for layer in layers["layers"]]


def section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def rows(title: str) -> list[list[str]]:
    """The cells of a table's body rows in the section C{title}."""
    lines = [line for line in section(title).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def doc_layers() -> list[tuple[str, set[str]]]:
    """The layers table, top first: (layer name, its modules)."""
    return [(cells[0], set(re.findall(r"`([\w.]+)`", cells[1]))) for cells in rows("Layers")]


def layer_of(module: str, layers: list[tuple[str, set[str]]]) -> str | None:
    for name, modules in layers:
        if any(module == m or module.startswith(m + ".") for m in modules):
            return name
    return None


def package_modules() -> dict[str, Path]:
    """
    Every module of the package, by dotted name; not the C{__init__} files: a
    layer's holds its docstring, and the root's is the lazy facade above every
    layer (it imports nothing until a name is asked for).
    """
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] != "__init__":
            found[".".join(parts)] = path
    return found


class LayerTests(SynchronousTestCase):
    def test_layers_table_is_the_contract(self) -> None:
        """The doc's layers, top to bottom, are exactly the layers contract's."""
        self.assertEqual([modules for _, modules in doc_layers()], contract_layers())

    def test_forbidden_list_is_the_contracts(self) -> None:
        """Each forbidden contract is listed in the doc with its id, its sources and every forbidden module."""
        listed = {}
        for line in section("Layers").splitlines():
            found = re.match(r"- `([\w-]+)`: (.*)", line)
            if found:
                sources, _, forbidden = found.group(2).partition(" imports none of ")
                listed[found.group(1)] = (set(re.findall(r"`([\w.]+)`", sources)), set(re.findall(r"`([\w.]+)`", forbidden)))
        expected = {
            c["id"]: (set(c["source_modules"]), set(c["forbidden_modules"])) for c in contracts() if c["type"] == "forbidden"
        }
        self.assertEqual(listed, expected)

    def test_every_module_is_in_a_layer(self) -> None:
        """No module of the package escapes the layers contract."""
        layers = doc_layers()
        self.assertEqual(sorted(m for m in package_modules() if layer_of(m, layers) is None), [])


def package_imports() -> list[tuple[str, str, int]]:
    """
    (importer, imported module of the package, line) for every import in the
    package: at module level, in a function, under C{if TYPE_CHECKING:}. A
    C{from .pkg import name} counts as importing C{pkg.name} when that is a
    module, else C{pkg}.
    """
    modules = set(package_modules()) | {"twisted_hub"} | {
        "twisted_hub." + path.parent.relative_to(PACKAGE).as_posix().replace("/", ".")
        for path in PACKAGE.rglob("__init__.py") if path.parent != PACKAGE
    }
    found = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) + (1 if is_package else 0) - node.level]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
            else:
                continue
            found += [(name, target, node.lineno) for target in targets if target in modules and target != name]
    return found


class TypeImportTests(SynchronousTestCase):
    def test_no_import_goes_up_even_for_types(self) -> None:
        """
        No import goes up a layer or sideways between the modules of one line,
        not even under C{if TYPE_CHECKING:} or inside a function (the contracts
        leave those out): a lower layer names what it needs of a higher one as
        a protocol of its own (C{LocalHubs}, C{MetricsSource}, C{LinkOwner},
        C{CallObserver}).  The one exception: C{from twisted_hub import
        __version__}, a string read when a page or a banner is made.
        """
        layers = contract_layers()

        def place(module: str) -> tuple[int, str] | None:
            for index, layer in enumerate(layers):
                for member in layer:
                    if module == member or module.startswith(member + "."):
                        return index, member
            return None

        wrong = []
        for importer, imported, line in package_imports():
            if imported == "twisted_hub":
                source = (PACKAGE / (importer.removeprefix("twisted_hub.").replace(".", "/") + ".py"))
                if not source.exists():
                    source = source.with_suffix("") / "__init__.py"
                text = source.read_text(encoding="utf-8").splitlines()[line - 1]
                if text.strip() != "from .. import __version__" and text.strip() != "from . import __version__":
                    wrong.append(f"{importer}:{line} imports the package facade: {text.strip()}")
                continue
            here, there = place(importer), place(imported)
            if here is None or there is None:
                continue  # the facade itself; the layers test finds modules outside every layer
            if there[0] < here[0] or (there[0] == here[0] and there[1] != here[1]):
                wrong.append(f"{importer}:{line} -> {imported}")
        self.assertEqual(sorted(wrong), [])


class ModuleMapTests(SynchronousTestCase):
    def test_every_module_has_one_row_in_its_layer(self) -> None:
        """Each module is in the module table once, with the layer its folder puts it in; each row's file exists."""
        layers = doc_layers()
        documented: dict[str, str] = {}
        for cells in rows("Modules"):
            for path in re.findall(r"`([\w/]+\.py)`", cells[0]):
                if path == "__init__.py":
                    continue  # the facade (see package_modules)
                module = "twisted_hub." + path[:-3].replace("/", ".")
                self.assertNotIn(module, documented, f"{path} has two rows")
                documented[module] = cells[1]
        present = package_modules()
        self.assertEqual(sorted(set(present) - set(documented)), [], "modules without a row in docs/architecture.md")
        self.assertEqual(sorted(set(documented) - set(present)), [], "rows for modules that do not exist")
        wrong = {m: (layer, layer_of(m, layers)) for m, layer in documented.items() if layer != layer_of(m, layers)}
        self.assertEqual(wrong, {}, "rows whose layer is not their folder's (row, folder)")


#: names docs/architecture.md quotes that are not twisted-hub's (Twisted's, autobahn's, HTTP's)
FOREIGN_NAMES = {"ClientService", "Clock", "ConnectionDeny", "Deferred", "Failure", "Host", "LoopingCall", "ProtocolWrapper"}


class DocReferenceTests(SynchronousTestCase):
    def test_every_quoted_path_and_name_exists(self) -> None:
        """
        Every file, folder, dotted module and class name the page quotes in
        backquotes exists (a module that moved leaves no stale name behind,
        as C{_autobahn.final_close_reason} once did).
        """
        import importlib

        defined = set()
        for path in PACKAGE.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    defined.add(node.name)
        missing = []
        for quoted in sorted(set(re.findall(r"`([^`\n]+)`", DOC.read_text(encoding="utf-8")))):
            if re.fullmatch(r"[\w/]+\.py", quoted):
                if not ((PACKAGE / quoted).exists() or (ROOT / quoted).exists()):
                    missing.append(quoted)
            elif re.fullmatch(r"_\w+/", quoted):
                if not (PACKAGE / quoted).is_dir():
                    missing.append(quoted)
            elif re.fullmatch(r"[\w.]+", quoted) and quoted.startswith(("twisted_hub.", "_")):
                dotted = quoted if quoted.startswith("twisted_hub") else "twisted_hub." + quoted
                parts = dotted.split(".")
                for cut in range(len(parts), 0, -1):
                    try:
                        found: object = importlib.import_module(".".join(parts[:cut]))
                    except ImportError:
                        continue
                    for attribute in parts[cut:]:
                        found = getattr(found, attribute, None)
                    if found is None:
                        missing.append(quoted)
                    break
                else:
                    missing.append(quoted)
            elif re.fullmatch(r"[A-Z]\w*[a-z]\w*", quoted):
                if quoted not in defined and quoted not in FOREIGN_NAMES:
                    missing.append(quoted)
        self.assertEqual(missing, [])


    def test_server_transport_members_are_the_protocols(self) -> None:
        """The members the page lists for a new server transport's C{ServerTransport} are exactly the protocol's."""
        text = " ".join(DOC.read_text(encoding="utf-8").split())
        listed = re.search(r"implements `ServerTransport` \(\w+ members: (.*?)\)", text)
        assert listed is not None, "the page no longer lists ServerTransport's members"
        source = (PACKAGE / "_core" / "session_output.py").read_text(encoding="utf-8")
        (protocol,) = [
            node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef) and node.name == "ServerTransport"
        ]
        members = {
            node.name if isinstance(node, ast.FunctionDef) else ast.unparse(node.target)
            for node in protocol.body if isinstance(node, (ast.FunctionDef, ast.AnnAssign))
        }
        self.assertEqual(set(re.findall(r"`(\w+)`", listed.group(1))), members)


class CoreTests(SynchronousTestCase):
    def test_no_core_class_over_the_limit(self) -> None:
        """
        Every class of the sans-IO modules -- the core and the backplane's
        protocol, the sources of the sans-IO contracts -- fits in
        CORE_CLASS_LINES lines, counted from its C{class} line to its last
        (docstrings, comments and blank lines included): one decision per unit.
        """
        sans_io = [
            module for c in contracts() if c["type"] == "forbidden" and c["id"].endswith("sans-io")
            for module in c["source_modules"]
        ]
        self.assertIn("twisted_hub._core", sans_io)
        paths = []
        for module in sans_io:
            relative = Path(*module.split(".")[1:])
            paths += list((PACKAGE / relative).rglob("*.py")) if (PACKAGE / relative).is_dir() else [PACKAGE / f"{relative}.py"]
        too_big = {}
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    lines = node.end_lineno - node.lineno + 1
                    if lines > CORE_CLASS_LINES:
                        too_big[f"{path.relative_to(ROOT)}:{node.name}"] = lines
        self.assertEqual(too_big, {})

    def test_core_imports_only_the_core_even_for_types(self) -> None:
        """
        The core's imports, those under C{if TYPE_CHECKING:} included (the
        contracts leave those out), name only the core, the standard library
        and msgpack: not even a type of another layer or of a framework.
        """
        allowed = set(sys.stdlib_module_names) | {"msgpack", "incremental", "__future__"}
        outside = []
        for path in (PACKAGE / "_core").rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level > 1:
                    outside.append(f"{path.name}: {'.' * node.level}{node.module or ''}")
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
                    if node.module.split(".")[0] not in allowed:
                        outside.append(f"{path.name}: {node.module}")
                elif isinstance(node, ast.Import):
                    outside += [f"{path.name}: {a.name}" for a in node.names if a.name.split(".")[0] not in allowed]
        self.assertEqual(outside, [])

    def test_core_loads_no_framework(self) -> None:
        """Importing every core module in a fresh interpreter loads no Twisted, autobahn, zope or txaio."""
        modules = [m for m in package_modules() if m.startswith("twisted_hub._core.")]
        code = (
            "import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted({n.split('.')[0] for n in sys.modules}\n"
            "             & {'twisted', 'autobahn', 'zope', 'txaio', 'txredisapi', 'prometheus_client'}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.assertEqual(done.stdout.strip(), "[]", done.stderr)


class ContractTests(SynchronousTestCase):
    def test_the_contracts_hold(self) -> None:
        """lint-imports (import-linter, a test dependency) finds every contract kept."""
        lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
        if not Path(lint).exists():
            self.fail("lint-imports is not installed: pip install -e '.[test]' installs import-linter")
        done = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
        self.assertEqual(done.returncode, 0, done.stdout[-4000:] + done.stderr[-2000:])
        self.assertIn("Contracts: ", done.stdout)
        self.assertNotIn(" broken", done.stdout.replace("0 broken", ""))


class PackagingTests(SynchronousTestCase):
    def test_every_layer_package_is_installed(self) -> None:
        """setup.cfg lists every package of twisted_hub/ (a layer folder left out is missing from the wheel)."""
        import configparser

        parser = configparser.ConfigParser()
        parser.read(ROOT / "setup.cfg")
        listed = set(parser.get("options", "packages").split())
        present = {"twisted_hub"} | {
            "twisted_hub." + path.parent.name for path in PACKAGE.glob("*/__init__.py")
        }
        self.assertEqual(sorted(present - listed), [])
