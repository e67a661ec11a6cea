"""
The dependency floors that setup.cfg declares, for .ci/floors.

Every requirement of install_requires and of the extras users install
(every extra but the tool extras: test, bench) must have a lower bound
(>=); that bound is its floor.  A package named in several places must have
the same lower bound everywhere (else one of them has drifted).

    python .ci/floors.py pins      # name==floor, one a line: a pip constraints file
    python .ci/floors.py extras    # the extras to install: the runtime ones and test
    python .ci/floors.py check     # the installed versions are exactly the floors

Environment markers are evaluated for the interpreter that runs this script.
Only the project's own requirements are pinned: what they need in turn
(txaio, cryptography, ...) resolves to the newest release that fits.
Needs the packaging library (pip installs it first in .ci/floors).
"""

from __future__ import annotations

import configparser
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"
#: extras that hold tools for developing the project, not features of it
TOOL_EXTRAS = frozenset({"test", "bench"})


class FloorError(Exception):
    """setup.cfg's requirements do not give one clear floor for each dependency."""


@dataclass(frozen=True)
class Floor:
    name: str  # canonical (PEP 503) name
    version: Version
    where: str  # the section that declared it first

    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def _requirements(text: str) -> list[Requirement]:
    """The requirements of one setup.cfg value: one a line; blank lines and comments skipped."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line]


def sections(setup_cfg: Path = SETUP_CFG) -> dict[str, list[Requirement]]:
    """install_requires and each extra, by name ("install_requires", "extra asyncio", ...)."""
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(setup_cfg, encoding="utf-8"):
        raise FloorError(f"{setup_cfg} cannot be read")
    found = {"install_requires": _requirements(parser.get("options", "install_requires", fallback=""))}
    if parser.has_section("options.extras_require"):
        for extra, text in parser.items("options.extras_require"):
            found[f"extra {extra}"] = _requirements(text)
    return found


def lower_bound(requirement: Requirement, where: str) -> Version:
    """The version of the requirement's one >= specifier."""
    bounds = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    if len(bounds) != 1:
        raise FloorError(f"{requirement} ({where}) needs exactly one >= lower bound to have a floor")
    return bounds[0]


def runtime_extras(setup_cfg: Path = SETUP_CFG) -> list[str]:
    """The extras a user installs for a feature (every extra but the tool extras)."""
    return sorted(name.removeprefix("extra ") for name in sections(setup_cfg) if name.startswith("extra ")
                  and name.removeprefix("extra ") not in TOOL_EXTRAS)


def floors(setup_cfg: Path = SETUP_CFG, environment: dict[str, str] | None = None) -> list[Floor]:
    """
    One floor per runtime dependency, in the order setup.cfg names them.

    @raise FloorError: a runtime requirement without exactly one >= bound, or
        a package whose lower bound differs between two places in setup.cfg.
    """
    found: dict[str, Floor] = {}
    all_sections = sections(setup_cfg)
    runtime = {"install_requires", *(f"extra {name}" for name in runtime_extras(setup_cfg))}

    def applies(requirement: Requirement) -> bool:
        return requirement.marker is None or requirement.marker.evaluate(environment)

    for where in [name for name in all_sections if name in runtime]:
        for requirement in filter(applies, all_sections[where]):
            floor = Floor(canonicalize_name(requirement.name), lower_bound(requirement, where), where)
            seen = found.setdefault(floor.name, floor)
            if seen.version != floor.version:
                raise FloorError(
                    f"{floor.name}: floor {seen.version} in {seen.where} but {floor.version} in {where}"
                )
    # A tool extra naming a runtime dependency must not ask for another lower bound.
    for where in [name for name in all_sections if name not in runtime]:
        for requirement in filter(applies, all_sections[where]):
            seen = found.get(canonicalize_name(requirement.name))
            if seen is not None and lower_bound(requirement, where) != seen.version:
                raise FloorError(
                    f"{seen.name}: floor {seen.version} in {seen.where} but {requirement} in {where}"
                )
    return list(found.values())


def check_installed(wanted: list[Floor]) -> list[str]:
    """One line per runtime dependency whose installed version is not its floor (none: all are)."""
    wrong = []
    for floor in wanted:
        try:
            installed = Version(metadata.version(floor.name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{floor.name} is not installed (floor {floor.version})")
            continue
        if installed != floor.version:
            wrong.append(f"{floor.name} {installed} is installed, not its floor {floor.version}")
    return wrong


def main(argv: list[str]) -> int:
    if argv == ["pins"]:
        print("\n".join(floor.pin() for floor in floors()))
    elif argv == ["extras"]:
        print(",".join([*runtime_extras(), "test"]))
    elif argv == ["check"]:
        wrong = check_installed(floors())
        if wrong:
            print("\n".join(wrong), file=sys.stderr)
            return 1
        print("installed at their floors: " + ", ".join(floor.pin() for floor in floors()))
    else:
        print("usage: floors.py pins | extras | check", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except FloorError as e:
        print(f"setup.cfg: {e}", file=sys.stderr)
        sys.exit(1)
