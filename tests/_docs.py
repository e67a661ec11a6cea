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
