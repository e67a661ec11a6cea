"""Code blocks of the markdown docs, by name, for the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FENCE = re.compile(r"^```(\w+)[ \t]*([\w.-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def named_blocks(relative_path: str) -> dict[str, tuple[str, str]]:
    """
    Every fenced block of a document as C{{name: (language, code)}}.  Each
    block must be named after its language (```` ```python embed-site ````)
    so a test can run it by name; an unnamed block raises, so a new
    example cannot slip in without a test.
    """
    text = (ROOT / relative_path).read_text()
    blocks: dict[str, tuple[str, str]] = {}
    fences = text.count("\n```") + text.startswith("```")
    for language, name, code in _FENCE.findall(text):
        if not name:
            raise AssertionError(f"{relative_path}: a ```{language} block has no name")
        if name in blocks:
            raise AssertionError(f"{relative_path}: two blocks are named {name!r}")
        blocks[name] = (language, code)
    if fences != 2 * len(blocks):
        raise AssertionError(f"{relative_path}: {fences} fences but {len(blocks)} parsed blocks")
    return blocks


#: The documents whose Python blocks must run (tests/test_doc_blocks.py enforces it).
def documents() -> list[str]:
    """README.md and every docs/*.md, as paths relative to the repository."""
    return ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))


_PYTHON_FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
#: The first line of a fragment: "# A fragment of NAME ...", NAME being a complete block of the
#: same document whose own first line is "# NAME", so a reader sees which example it belongs to.
FRAGMENT = re.compile(r"\A# A fragment of ([\w.-]+)\b")


def python_blocks(relative_path: str) -> dict[str, str]:
    """
    Every ```` ```python NAME ```` block of a document as C{{name: code}};
    an unnamed (or twice-named) one raises.  Unlike L{named_blocks} it
    looks at Python blocks only, so it applies to every document.
    """
    blocks: dict[str, str] = {}
    for info, code in _PYTHON_FENCE.findall((ROOT / relative_path).read_text()):
        name = info.strip()
        if not re.fullmatch(r"[\w.-]+", name):
            raise AssertionError(f"{relative_path}: a ```python block has no name (```python NAME): {code[:60]!r}")
        if name in blocks:
            raise AssertionError(f"{relative_path}: two ```python blocks are named {name!r}")
        blocks[name] = code
    return blocks


def fragment_of(code: str) -> str | None:
    """The complete example a fragment belongs to (None: the block claims to be complete)."""
    match = FRAGMENT.match(code)
    return match.group(1) if match else None


def undefined_names(code: str) -> list[str]:
    """
    The global names a block uses but neither defines, imports nor gets
    from builtins: what makes C{NameError: name 'URL' is not defined}.
    """
    import builtins
    import symtable

    module = symtable.symtable(code, "<doc block>", "exec")
    defined = {s.get_name() for s in module.get_symbols() if s.is_assigned() or s.is_imported()}
    known = defined | set(dir(builtins)) | {"__name__", "__file__"}
    missing: set[str] = set()

    def visit(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            global_use = table is module or symbol.is_global()
            if global_use and symbol.is_referenced() and symbol.get_name() not in known:
                missing.add(symbol.get_name())
        for child in table.get_children():
            visit(child)

    visit(module)
    return sorted(missing)


#: Every complete Python block of README.md and docs/*.md, and the test that runs it as
#: written (C{tests/test_doc_blocks.py} checks the list against the documents, and that each
#: test exists and names its block).  Fragments are not listed: that module runs each on top
#: of the example it names.
RUN_BY: dict[tuple[str, str], str] = {
    ("README.md", "room.py"): "tests/test_readme.py::ReadmeExampleTests::test_example_runs",
    ("docs/asyncio.md", "asyncio-example"): "tests/test_aio.py::test_docs_example_runs",
    ("docs/embedding.md", "myapp-tac"): "tests/test_embedding.py::test_tac_example_under_twistd",
    ("docs/embedding.md", "site-with-hub"): "tests/test_embedding.py::test_site_example_runs",
    **{
        ("docs/heartbeat.md", name): "tests/test_docs_heartbeat.py::HeartbeatDocTests::test_examples_run_and_print_what_they_say"
        for name in (
            "quick-start", "magiconion-features", "tank-reconnect", "slow-link", "clock-sync",
            "per-connection-override",
        )
    },
    ("docs/auth.md", "auth-example"): "tests/test_docs_auth.py::AuthDocTests::test_example_runs",
    ("docs/auth.md", "tokenhub.py"): "tests/test_docs_auth.py::test_asyncio_example",
    ("docs/auth.md", "tokens-asyncio"): "tests/test_docs_auth.py::test_asyncio_example",
    ("docs/filters.md", "filters-example"):
        "tests/test_docs_filters.py::FiltersDocTests::test_example_runs_and_logs_the_line_shown",
    ("docs/streams.md", "streams-example"): "tests/test_docs_streams.py::test_example_runs",
    ("docs/resumption.md", "resume-example"): "tests/test_resume_sessions.py::test_docs_example_runs",
    ("docs/streams.md", "streamhub.py"): "tests/test_docs_streams.py::test_asyncio_example",
    ("docs/streams.md", "streams-asyncio"): "tests/test_docs_streams.py::test_asyncio_example",
    ("docs/javascript.md", "mount"): "tests/test_static.py::DocsMountExampleTests::test_mount_example",
    ("docs/scaling.md", "scale-factory"): "tests/test_scaling_docs.py::DocumentTests::test_factory_example",
    ("docs/tutorial.md", "counterhub.py"): "tests/test_tutorial.py::test_the_tutorial_as_written",
    ("docs/tutorial.md", "counter_client.py"): "tests/test_tutorial.py::test_the_tutorial_as_written",
    ("docs/testing.md", "chat.py"): "tests/test_docs_testing.py::TestingDocTests::test_trial_example",
    ("docs/testing.md", "test_chat.py"): "tests/test_docs_testing.py::TestingDocTests::test_trial_example",
    ("docs/testing.md", "test_chat_pytest.py"): "tests/test_docs_testing.py::TestingDocTests::test_pytest_example",
}
