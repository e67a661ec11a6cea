"""
.ci/floors installs exactly the dependency floors setup.cfg declares: the pins
come from setup.cfg (.ci/floors.py), and a setup.cfg without one clear floor
per dependency is refused.
"""

from __future__ import annotations

import configparser
import importlib.util
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def load_floors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_floors", ROOT / ".ci" / "floors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


floors = load_floors()


def write_setup_cfg(tmp_path: Path, install_requires: str, extras: dict[str, str]) -> Path:
    def block(text: str) -> str:
        return "".join(f"\n    {line}" for line in text.strip().splitlines())

    lines = ["[metadata]", "name = demo", "", "[options]", f"install_requires ={block(install_requires)}", ""]
    lines += ["[options.extras_require]", *(f"{name} ={block(text)}" for name, text in extras.items())]
    path = tmp_path / "setup.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pins_are_the_lower_bounds_in_setup_cfg() -> None:
    """`floors.py pins` pins each runtime requirement (install_requires, asyncio, jwt, redis, metrics) at its >= bound."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg")
    runtime = parser.get("options", "install_requires")
    runtime += "".join(parser.get("options.extras_require", extra) for extra in ("asyncio", "jwt", "redis", "metrics"))
    expected = {
        name.lower(): Version(version)
        for name, version in re.findall(r"^\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", runtime, re.MULTILINE)
    }
    assert set(expected) == {"twisted", "autobahn", "msgpack", "websockets", "txredisapi", "prometheus-client", "pyjwt"}
    pins = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "floors.py"), "pins"], capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    pinned = {name: Version(version) for name, version in (pin.split("==") for pin in pins)}
    assert pinned == expected


def test_extras_installed_on_the_floors() -> None:
    """The floors job installs every runtime extra and the test tools, not the benchmark extra."""
    assert floors.runtime_extras() == ["asyncio", "jwt", "metrics", "redis"]
    extras = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "floors.py"), "extras"], capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    assert extras == "asyncio,jwt,metrics,redis,test"


def test_ci_runs_the_floors_job() -> None:
    """.ci/run runs .ci/floors, and .ci/floors installs floors.py's pins as constraints and checks them before pytest."""
    assert re.search(r"^(timeout \d+ )?bash \.ci/floors\b", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)
    script = (ROOT / ".ci" / "floors").read_text()
    steps = [script.index(step) for step in ('floors.py pins >', '-c "$work/floors.txt"', "floors.py check", "-m pytest")]
    assert steps == sorted(steps)


def test_fast_path_ranges_start_at_the_floors() -> None:
    """The autobahn fast path and Twisted direct writes are guarded by version ranges that start at setup.cfg's floors."""
    from twisted_hub._twisted import fastpath as _autobahn

    pinned = {floor.name: floor.version for floor in floors.floors()}
    assert _autobahn.TESTED_AUTOBAHN[0] == pinned["autobahn"].release[:2]
    assert _autobahn.TESTED_TWISTED[0] == pinned["twisted"].release[:2]
    autobahn = next(r for r in floors.sections()["install_requires"] if r.name == "autobahn")
    upper = {Version(spec.version) for spec in autobahn.specifier if spec.operator == "<"}
    assert upper == {Version(".".join(map(str, _autobahn.TESTED_AUTOBAHN[1])))}  # the fast path's high end is the cap


def test_readme_names_the_floors() -> None:
    """README's table of supported versions names every floor as setup.cfg declares it."""
    readme = (ROOT / "README.md").read_text()
    for floor in floors.floors():
        assert f"`{floor.name}>={floor.version}`" in readme


def test_python_versions_tested_are_the_ones_declared() -> None:
    """The classifiers start at python_requires' bound, and CI runs the floors on the oldest and the newest of them."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg")
    declared = sorted(
        (tuple(int(part) for part in version.split(".")) for version in
         re.findall(r"^Programming Language :: Python :: (3\.\d+)$", parser.get("metadata", "classifiers"), re.MULTILINE)),
    )
    assert f">={declared[0][0]}.{declared[0][1]}" == parser.get("options", "python_requires").replace(" ", "")
    ci = re.search(r"^(?:timeout \d+ )?bash \.ci/floors ([\d. ]+)$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)
    assert ci is not None
    tested = [tuple(int(part) for part in version.split(".")) for version in ci.group(1).split()]
    assert set(tested) <= set(declared)
    assert declared[0] in tested and declared[-1] in tested


def test_tool_extras_are_not_pinned(tmp_path: Path) -> None:
    """Only runtime requirements get floors: the test and bench extras' own tools stay unpinned."""
    path = write_setup_cfg(
        tmp_path, "twisted[tls]>=26.4.0\nautobahn>=24.4.2,<27",
        {"redis": "txredisapi>=1.4.12", "test": "txredisapi>=1.4.12\npytest>=8.0", "bench": "psutil>=5.9"},
    )
    assert [floor.pin() for floor in floors.floors(path)] == ["twisted==26.4.0", "autobahn==24.4.2", "txredisapi==1.4.12"]


@pytest.mark.parametrize("requirement", ["msgpack", "msgpack>1.0", "msgpack<2", "msgpack==1.0.5"])
def test_a_requirement_without_a_floor_is_refused(tmp_path: Path, requirement: str) -> None:
    """A runtime requirement without a >= bound has no floor: refused, naming it."""
    path = write_setup_cfg(tmp_path, f"twisted>=26.4.0\n{requirement}", {})
    with pytest.raises(floors.FloorError, match="msgpack"):
        floors.floors(path)


def test_two_floors_for_one_package_are_refused(tmp_path: Path) -> None:
    """A package with one lower bound in its extra and another in the test extra has drifted: refused."""
    path = write_setup_cfg(tmp_path, "twisted>=26.4.0", {"asyncio": "websockets>=14.0", "test": "websockets>=15.0"})
    with pytest.raises(floors.FloorError, match="websockets: floor 14.0 in extra asyncio but websockets>=15.0 in extra test"):
        floors.floors(path)


def test_markers_choose_the_floor(tmp_path: Path) -> None:
    """A floor that depends on the Python version (an environment marker) is the one for the running interpreter."""
    path = write_setup_cfg(
        tmp_path, 'msgpack>=1.0.5; python_version < "3.13"\nmsgpack>=1.1.0; python_version >= "3.13"', {},
    )
    assert [floor.pin() for floor in floors.floors(path, {"python_version": "3.11"})] == ["msgpack==1.0.5"]
    assert [floor.pin() for floor in floors.floors(path, {"python_version": "3.13"})] == ["msgpack==1.1.0"]


def test_check_names_each_version_off_its_floor() -> None:
    """`floors.py check` reports an installed version that is not the floor, and a package not installed."""
    installed = Version(metadata.version("packaging"))
    good = floors.Floor("packaging", installed, "install_requires")
    off = floors.Floor("packaging", Version("0.1"), "install_requires")
    missing = floors.Floor("no-such-distribution-here", Version("1.0"), "install_requires")
    assert floors.check_installed([good]) == []
    assert floors.check_installed([off, missing]) == [
        f"packaging {installed} is installed, not its floor 0.1",
        "no-such-distribution-here is not installed (floor 1.0)",
    ]
