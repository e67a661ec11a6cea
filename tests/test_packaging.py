"""
Installing the package the two ways a user does (a wheel, and `pip install -e .` for
development) leaves a `twistd` that knows the `hub` plugin.  Runs pip in a fresh
virtualenv of its own (no system site-packages, so an installed copy cannot hide a
broken one), on a copy of the sources.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "twisted_hub", "twisted")


def install_requires() -> list[str]:
    """setup.cfg's install_requires, one requirement a line."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return [line.strip() for line in parser.get("options", "install_requires").splitlines() if line.strip()]


def run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


class InstallTests(SynchronousTestCase):
    def test_twistd_finds_the_plugin_after_wheel_and_editable_installs(self) -> None:
        """`pip install .` and `pip install -e .` both give a twistd that lists and runs `hub --help`."""
        with tempfile.TemporaryDirectory() as temp:
            work = Path(temp)
            project = work / "project"
            project.mkdir()
            for name in SOURCES:
                source = ROOT / name
                if source.is_dir():
                    shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"))
                else:
                    shutil.copy(source, project / name)
            venv = work / "venv"
            run(sys.executable, "-m", "venv", venv, cwd=work)
            pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            run(*pip, *install_requires(), cwd=work)
            twistd = venv / "bin" / "twistd"
            elsewhere = work  # not the project folder: nothing found by accident from the cwd
            for how in (["-e", project], [project]):
                run(*pip, "--no-deps", *how, cwd=elsewhere)
                listing = run(twistd, "--help", cwd=elsewhere)
                self.assertIn("Serve twisted-hub", listing, how)
                self.assertIn("--heartbeat-interval", run(twistd, "hub", "--help", cwd=elsewhere), how)
                run(venv / "bin" / "python", "-m", "pip", "uninstall", "-q", "-y", "twisted-hub", cwd=elsewhere)
