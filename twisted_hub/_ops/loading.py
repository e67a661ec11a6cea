"""
Loading the user's hub classes by name (C{module:Class} or C{path/to/file.py:Class}),
with a one-line hint for every way it can go wrong: shared by C{twistd hub --hub}
and the command-line client (C{python -m twisted_hub ... --hub}).
"""

from __future__ import annotations

import importlib
import os
import sys

from twisted.python import usage

from .._hubs.hub import Hub

__all__ = ["DEFAULT_HINT", "HintedUsageError", "load_hub"]


class HintedUsageError(usage.UsageError):
    """
    A usage error of C{twistd hub} with a one-line hint of what to do about
    it; C{twistd hub} prints the two lines instead of its whole help.
    """

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


#: The hint of a usage error that has no better one.
DEFAULT_HINT = "'twistd hub --help' lists the options; docs/deploying.md explains them"

_HUB_HINT_TEMPLATE = (
    "--hub MODULE:CLASS imports MODULE from the directory twistd was started in ({directory}), "
    "then from sys.path; or name the file: --hub path/to/{stem}.py:{attribute}"
)


def _search_first(directory: str) -> None:
    """Put C{directory} (absolute) first on C{sys.path}, as C{python3 -m} puts the current directory."""
    folder = os.path.abspath(directory)
    if folder not in (os.path.abspath(entry or os.curdir) for entry in sys.path):
        sys.path.insert(0, folder)
    importlib.invalidate_caches()  # files written since the import system last listed the folder


def load_hub(spec: str, directory: str | None = None) -> type[Hub]:
    """
    Import C{module:Class} or C{path/to/file.py:Class} and check it is a hub class.

    A module is looked for in C{directory} first (default: the current
    directory, the one C{twistd} was started in), then on C{sys.path}: the
    directory is put first on C{sys.path}, as C{python3 -m} does, so the
    module's own imports of its neighbours work too.  A file is imported as
    the module named after it, with its folder first on C{sys.path}.

    @raise HintedUsageError: the spec is malformed, the module cannot be
        imported (not found, or it raised), or the name is not a hub class.
    """
    target, colon, attribute = spec.rpartition(":")
    if not colon or not target or not attribute:
        raise HintedUsageError(
            f"--hub wants module:Class, got {spec!r}",
            "e.g. --hub counterhub:CounterHub for the class CounterHub in counterhub.py",
        )
    base = os.path.abspath(directory if directory is not None else os.curdir)
    if target.endswith(".py") or "/" in target or os.sep in target:
        module_name = _search_file(spec, os.path.join(base, target), attribute)
    else:
        module_name = target
        _search_first(base)
    stem = module_name.rpartition(".")[2]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise HintedUsageError(
                f"--hub {spec}: no module {module_name!r} in {base} or on sys.path",
                _HUB_HINT_TEMPLATE.format(directory=base, stem=stem, attribute=attribute),
            ) from None
        raise HintedUsageError(
            f"--hub {spec}: importing {module_name!r} failed: {e}",
            f"{module_name} imports {missing!r}, which is not installed (or not on sys.path)",
        ) from None
    except SyntaxError as e:
        raise HintedUsageError(
            f"--hub {spec}: {e.filename}, line {e.lineno}: SyntaxError: {e.msg}", "fix the module and start again"
        ) from None
    except Exception as e:  # the module itself raised while importing: say where, once
        raise HintedUsageError(
            f"--hub {spec}: importing {module_name!r} raised {e.__class__.__name__}: {e}{_where(e)}",
            f"python3 -c 'import {module_name}' (in {base}) shows the whole traceback",
        ) from None
    hub_class = getattr(module, attribute, None)
    hubs_there = sorted(
        name for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, Hub) and value is not Hub
    )
    found = f"its hub classes: {', '.join(hubs_there)}" if hubs_there else "it defines no Hub subclass"
    if hub_class is None:
        raise HintedUsageError(f"--hub {spec}: module {module_name!r} has no {attribute!r}", found)
    if not (isinstance(hub_class, type) and issubclass(hub_class, Hub)) or hub_class is Hub:
        raise HintedUsageError(
            f"--hub {spec}: {attribute!r} is not a Hub subclass in {module_name!r}",
            f"{found}; a hub is a class that derives from twisted_hub.Hub (docs/tutorial.md)",
        )
    return hub_class


def _search_file(spec: str, path: str, attribute: str) -> str:
    """C{--hub path/to/file.py:Class}: put the file's folder first on C{sys.path}; return its module name."""
    path = os.path.normpath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "__init__.py")):
        folder, module_name = os.path.split(path)
    else:
        folder, file_name = os.path.split(path)
        module_name, extension = os.path.splitext(file_name)
        if extension != ".py" or not os.path.isfile(path):
            raise HintedUsageError(
                f"--hub {spec}: no file {path}",
                f"give the .py file that defines {attribute}, or module:Class to import a module",
            )
    if not module_name.isidentifier():
        raise HintedUsageError(
            f"--hub {spec}: {module_name!r} cannot be a module name",
            "rename the file to a Python identifier (letters, digits, _)",
        )
    loaded = sys.modules.get(module_name)
    loaded_from = getattr(loaded, "__file__", None)
    if loaded is not None and (
        loaded_from is None or os.path.dirname(os.path.abspath(loaded_from)) not in (folder, path)
    ):
        raise HintedUsageError(
            f"--hub {spec}: another module named {module_name!r} is imported already ({loaded_from or 'built in'})",
            "rename the file",
        )
    _search_first(folder)
    return module_name


def _where(error: BaseException) -> str:
    """C{" (file, line N)"}: the innermost frame of an exception's traceback, or nothing."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    own = [frame for frame in frames if "importlib" not in frame.filename]
    if not own:
        return ""
    return f" ({own[-1].filename}, line {own[-1].lineno})"
