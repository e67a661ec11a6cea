"""The one "not given" marker of the API (where None already means something: "never", "none")."""

from __future__ import annotations

import enum
from typing import Final, Literal


class _Unset(enum.Enum):
    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


#: An argument left out, as opposed to an explicit None (e.g. a timeout of
#: None means "never"; UNSET means "the default").  Typed, so mypy narrows
#: C{if value is UNSET} without casts.
UNSET: Final = _Unset.UNSET
Unset = Literal[_Unset.UNSET]
