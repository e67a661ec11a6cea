"""
js/dist built from js/src once per test run (once per process), however many
suites drive the JavaScript client: the build is the same every time, since
nothing in the suites changes js/src, and each took a second or two.
"""

from __future__ import annotations

from collections.abc import Callable

_built = False


def build_once(build: Callable[[], object]) -> None:
    """Run BUILD (npm ci when needed, then `node build.mjs`) unless a build already succeeded in this process."""
    global _built
    if not _built:
        build()
        _built = True
