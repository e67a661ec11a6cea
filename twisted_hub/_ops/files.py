"""
The user's own files, served beside the hub by L{HubService} (C{static=})
and C{twistd hub --static}: L{StaticFolder} serves one folder (no directory
listing, no dot-files, nothing outside it), L{StaticSite} puts folders
under the hub's own resources, which always win.  See C{docs/deploying.md},
"Serving your own pages".

Imported only when static files are served: C{twisted.web.static} warns
(about its own class attributes) when it is first imported.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from .._core.base_error import HubArgumentError
from .static import TextAnswer

with warnings.catch_warnings():
    # Twisted's module builds its default 404/403 pages with classes it has
    # deprecated itself: nothing a user of it can change.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"twisted\.web\.static")
    from twisted.web.static import File


#: What C{HubService(static=...)} takes: one folder (served at C{/}), or URL
#: prefixes to folders (C{{"/": "site", "/docs": "build/html"}}).
StaticSpec = str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]]

#: The one dot-name a static folder serves (RFC 8615 well-known URIs); every
#: other name starting with "." (.git, .env, .htpasswd ...) answers 404.
SERVED_DOT_NAMES = frozenset({".well-known"})

#: Content types that must be right whatever the machine's /etc/mime.types
#: says: a module script served as text/plain does not run in a browser.
_CONTENT_TYPES = {
    ".html": "text/html", ".htm": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
    ".css": "text/css", ".json": "application/json", ".map": "application/json", ".wasm": "application/wasm",
    ".svg": "image/svg+xml", ".txt": "text/plain", ".webmanifest": "application/manifest+json",
}


def _hidden(name: str) -> bool:
    return (name.startswith(".") and name not in SERVED_DOT_NAMES) or "\x00" in name


class StaticFolder(File):
    """
    A folder of the user's files, served beside the hub: C{index.html} for a
    directory, C{Last-Modified} / C{If-Modified-Since}, byte ranges (all from
    L{twisted.web.static.File}), and

      - nothing outside the folder: C{..} (also as C{%2e%2e}) and segments
        holding a C{/} (C{..%2f}) answer 404;
      - no dot-files: C{.git/}, C{.env} ... answer 404 (C{.well-known/} is
        served);
      - no directory listing (a directory without C{index.html} answers
        404) unless C{listing} is true;
      - no scripts run (C{.rpy} files are plain files);
      - C{Cache-Control: no-cache} (browsers revalidate, so an edited file
        shows at once; unchanged files answer 304) and
        C{X-Content-Type-Options: nosniff}.

    Symbolic links inside the folder are followed, as nginx and Apache do by
    default: link only what you mean to publish.
    """

    contentTypes = {**File.contentTypes, **_CONTENT_TYPES}
    processors: dict[str, Callable[..., Any]] = {}
    indexNames = ["index.html", "index.htm"]
    #: serve an HTML listing for a directory without an index.html
    listing = False

    def getChild(self, path: bytes | str, request: Request) -> IResource:
        name = path.decode("utf-8", "replace") if isinstance(path, bytes) else path
        if _hidden(name):
            return self.childNotFound
        child: IResource = super().getChild(path, request)  # type: ignore[no-untyped-call]
        return child

    def listNames(self) -> list[str]:
        names: list[str] = super().listNames()  # type: ignore[no-untyped-call]
        return [name for name in names if not _hidden(name)]

    def directoryListing(self) -> IResource:
        if self.listing:
            lister: IResource = super().directoryListing()  # type: ignore[no-untyped-call]
            return lister
        return _NoIndex()

    def createSimilarFile(self, path: str) -> File:
        similar = super().createSimilarFile(path)  # type: ignore[no-untyped-call]
        assert isinstance(similar, StaticFolder)
        similar.listing = self.listing
        return similar

    def render_GET(self, request: Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        answer: bytes | int = super().render_GET(request)  # type: ignore[no-untyped-call]
        return answer

    render_HEAD = render_GET


def _NoIndex() -> TextAnswer:
    return TextAnswer(404, b"Not found: this folder has no index.html (directory listings are off).\n")


def _HostRefused() -> TextAnswer:
    return TextAnswer(400, b"This host name is not served here.\n", b"Host not allowed")


def _plain_path(path: str) -> bool:
    segments = path.strip("/").split("/")
    return (
        path.startswith("/")
        and not any(c in path for c in "?#%\\ \x00")
        and "//" not in path.rstrip("/")
        and not any(segment in (".", "..") for segment in segments)
    )


def parse_static_option(value: str) -> tuple[str, str]:
    """
    C{--static [PREFIX=]DIR}: C{"site"} is C{("/", "site")}, C{"/app=build"}
    is C{("/app", "build")}.  A value is C{PREFIX=DIR} when it has a C{=}
    and what comes before the first one starts with C{/}; a folder whose
    path has a C{=} in it is given with its prefix, C{/=DIR}.
    """
    prefix, equals, directory = value.partition("=")
    if equals and prefix.startswith("/"):
        return prefix, directory
    return "/", value


def static_mounts(spec: StaticSpec | None) -> list[tuple[str, str]]:
    """
    The folders of C{spec} as C{(prefix, absolute folder)}, longest prefix
    first; raise L{HubArgumentError} for a prefix that is not a plain path,
    one prefix given twice, or a folder that does not exist.
    """
    if spec is None:
        return []
    pairs: Iterable[tuple[str, str | os.PathLike[str]]] = (
        spec.items() if isinstance(spec, Mapping) else [("/", spec)]
    )
    mounts: dict[str, str] = {}
    for raw_prefix, raw_directory in pairs:
        if not isinstance(raw_prefix, str) or not _plain_path(raw_prefix):
            raise HubArgumentError(f"a static prefix must be a plain path like / or /app, got {raw_prefix!r}")
        prefix = "/" + raw_prefix.strip("/")
        directory = os.fspath(raw_directory)
        if not directory:
            raise HubArgumentError(f"no folder given for the static files at {prefix!r}")
        if prefix in mounts:
            raise HubArgumentError(f"two static folders at {prefix!r}")
        if not os.path.isdir(directory):
            what = "is not a folder" if os.path.exists(directory) else "does not exist"
            raise HubArgumentError(f"static files at {prefix!r}: {directory!r} {what}")
        mounts[prefix] = os.path.abspath(directory)
    return sorted(mounts.items(), key=lambda mount: (-_depth(mount[0]), mount[0]))


def _depth(prefix: str) -> int:
    return len(_path_segments(prefix))


def _path_segments(path: str) -> list[bytes]:
    return [segment.encode() for segment in path.strip("/").split("/") if segment]


def reserved_paths(hub_path: str, status_path: str | None, *, metrics: bool, demo: bool) -> list[str]:
    """
    What the hub itself serves on a L{HubService}'s listeners, each with
    everything below it: the hub endpoint, C{/client}, C{/health}, the
    status page and its JSON (when served), C{/metrics} and C{/demo} (when
    served).  These win over static files.
    """
    from .._twisted.resource import status_json_path

    paths = ["/" + hub_path.strip("/"), "/client", "/health"]
    if status_path is not None:
        paths += ["/" + status_path.strip("/"), status_json_path(status_path)]
    if metrics:
        paths.append("/metrics")
    if demo:
        paths.append("/demo")
    return paths


def check_static_mounts(mounts: Sequence[tuple[str, str]], reserved: Iterable[str]) -> None:
    """
    Refuse a static folder that the hub's own paths would hide entirely: at
    one of them or below it.  (Above one is fine: there the hub wins.)
    """
    for prefix, _ in mounts:
        for path in reserved:
            if prefix == path and path == "/":
                raise HubArgumentError(
                    "the static files and the status page are both at '/': move the status page "
                    "(--status-path /status, status_path='/status') or serve the files at a prefix"
                )
            if path != "/" and (prefix == path or prefix.startswith(path + "/")):
                raise HubArgumentError(
                    f"static files at {prefix!r} would never be served: the hub serves {path!r} "
                    "(and what is below it) itself"
                )


def shadowed_files(mounts: Sequence[tuple[str, str]], reserved: Iterable[str]) -> list[tuple[str, str]]:
    """
    Files and folders of the static folders that the hub's own paths hide,
    as C{(file system path, hub path)}: worth a warning at start.
    """
    shadowed = []
    for path in reserved:
        for prefix, directory in mounts:
            if path == prefix or not (prefix == "/" or path.startswith(prefix + "/")):
                continue
            inside = path[len(prefix):].strip("/")
            candidate = os.path.join(directory, *inside.split("/"))
            if inside and os.path.lexists(candidate):
                shadowed.append((candidate, path))
    return shadowed


class StaticSite(Resource):
    """
    The root of a site that serves the hub's own resources and the user's
    folders beside them.  Which answers a request:

      1. the hub's own resources (C{reserved}, each with everything below
         it: the hub endpoint, C{/client/}, C{/health}, the status page ...)
         always; the root's C{hub_root} answers them;
      2. else the static folder with the longest prefix the path is in
         (after the C{Host} check of C{host_allowed}: 400 for a host the
         server does not serve);
      3. else C{hub_root} again (a 404, mostly).
    """

    def __init__(
        self,
        hub_root: Resource,
        mounts: Sequence[tuple[str, str]],
        reserved: Iterable[str],
        *,
        listing: bool = False,
        host_allowed: Callable[[str | None], bool] = lambda host: True,
    ) -> None:
        Resource.__init__(self)
        self.hub_root = hub_root
        self._reserved = [_path_segments(path) or [b""] for path in reserved]
        self.folders: list[tuple[list[bytes], StaticFolder]] = []
        for prefix, directory in sorted(mounts, key=lambda mount: -_depth(mount[0])):
            folder = StaticFolder(directory)
            folder.listing = listing
            self.folders.append((_path_segments(prefix), folder))
        self._host_allowed = host_allowed

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        # Twisted has taken `path` off the request's postpath: the whole path is both.
        rest = request.postpath
        assert rest is not None and request.prepath is not None  # set by Request.process
        segments = [path, *rest]
        if any(segments[: len(reserved)] == reserved for reserved in self._reserved):
            child: IResource = self.hub_root.getChildWithDefault(path, request)
            return child
        for prefix, folder in self.folders:
            if segments[: len(prefix)] != prefix:
                continue
            if not self._host_allowed(request.getHeader("host")):
                return _HostRefused()
            if not prefix:
                found: IResource = folder.getChildWithDefault(path, request)  # type: ignore[no-untyped-call]
                return found
            for _ in prefix[1:]:  # the rest of the prefix, as Twisted's traversal would take it
                request.prepath.append(rest.pop(0))
            return folder
        fallback: IResource = self.hub_root.getChildWithDefault(path, request)
        return fallback

    def render(self, request: Request) -> Any:
        return self.hub_root.render(request)
