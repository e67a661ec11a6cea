"""
The rule for every fenced Python block of README.md and docs/*.md: it is
either a complete program, run as written by a test (C{RUN_BY} in
C{tests/_docs.py}), or visibly a fragment of a named complete example of the
same document ("# A fragment of room.py ..." as its first line), which runs
here on top of that example.
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ._docs import ROOT, RUN_BY, documents, fragment_of, python_blocks, undefined_names


def every_block() -> list[tuple[str, str, str]]:
    """(document, name, code) of every Python block of the documents."""
    return [(doc, name, code) for doc in documents() for name, code in python_blocks(doc).items()]


def resolve(test_id: str) -> tuple[Any, Any]:
    """C{tests/test_x.py::Class::test} -> (its module, the test)."""
    path, *attributes = test_id.split("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    target: Any = module
    for attribute in attributes:
        target = getattr(target, attribute)
    return module, target


class DocBlockRuleTests(SynchronousTestCase):
    def test_every_python_block_is_named(self) -> None:
        """Every ```python block of README.md and docs/*.md has a name, unique in its document (else python_blocks raises)."""
        blocks = every_block()
        self.assertGreaterEqual(len(blocks), 15)
        self.assertIn(("README.md", "room.py"), [(doc, name) for doc, name, _ in blocks])

    def test_complete_blocks_define_every_name_they_use(self) -> None:
        """A block not marked as a fragment uses no name it does not import or define (no NameError when run alone)."""
        for doc, name, code in every_block():
            if fragment_of(code) is None:
                self.assertEqual(undefined_names(code), [], f"{doc} block {name}: mark it '# A fragment of ...' or complete it")

    def test_complete_blocks_are_run_by_a_named_test(self) -> None:
        """Each complete block is in RUN_BY, whose test exists and fetches that block by name; RUN_BY names no other block."""
        complete = {(doc, name) for doc, name, code in every_block() if fragment_of(code) is None}
        self.assertEqual(set(RUN_BY), complete)
        for (doc, name), test_id in RUN_BY.items():
            module, test = resolve(test_id)
            self.assertTrue(callable(test), test_id)
            source = (ROOT / test_id.split("::")[0]).read_text()
            self.assertIn(f'"{name}"', source, f"{test_id} does not fetch {doc} block {name!r} by name")
            self.assertIn(f'"{doc}"', source, f"{test_id} does not read {doc}")

    def test_fragments_run_on_their_example(self) -> None:
        """A fragment names a complete block of its document whose first line shows that name, and runs after it."""
        fragments = 0
        for doc, name, code in every_block():
            example_name = fragment_of(code)
            if example_name is None:
                continue
            fragments += 1
            blocks = python_blocks(doc)
            self.assertIn(example_name, blocks, f"{doc} block {name}: no block named {example_name!r}")
            example = blocks[example_name]
            self.assertIsNone(fragment_of(example), f"{doc} block {name}: {example_name!r} is itself a fragment")
            first_line = example.split("\n", 1)[0]
            self.assertRegex(first_line, rf"^# {example_name}\b", f"{doc}: {example_name!r} does not show its name")
            namespace: dict[str, Any] = {"__name__": "docs_fragment"}  # not __main__: the example defines, runs nothing
            exec(compile(example, f"{doc}:{example_name}", "exec"), namespace)
            exec(compile(code, f"{doc}:{name}", "exec"), namespace)
        self.assertGreaterEqual(fragments, 1)


class CheckerTests(SynchronousTestCase):
    def test_undefined_names(self) -> None:
        """The checker finds the NameErrors the docs used to have (URL, RoomHub) and accepts what Python defines."""
        self.assertEqual(undefined_names("import asyncio\nasyncio.run(main(URL))\nasync def main(url): pass\n"), ["URL"])
        self.assertEqual(undefined_names("class GameHub(Hub): ...\nf = Factory([RoomHub])\n"), ["Factory", "Hub", "RoomHub"])
        defined = (
            "import os\nfrom x import y as z\nclass A:\n    n = len([i for i in range(3)])\n"
            "    def f(self, a): return a + z + B\nB = 1\nfor k in os.environ: pass\n"
            "with open(__file__) as fh: pass\ntry:\n    pass\nexcept KeyError as e:\n    print(e)\n"
        )
        self.assertEqual(undefined_names(defined), [])

    def test_fragment_marker(self) -> None:
        """Only a first line '# A fragment of NAME' marks a fragment."""
        self.assertEqual(fragment_of("# A fragment of room.py (above)\nx = 1\n"), "room.py")
        self.assertIsNone(fragment_of("x = 1\n# A fragment of room.py\n"))
        self.assertIsNone(fragment_of("# room.py: run with  python3 room.py\n"))
