"""Package index: the wheels a "simple" package index (PEP 503 HTML or PEP 691 JSON) offers for a project.

Wheels normally travel inside a plugin's bundle. When `manager.plugins.index_url` is set (it is not by default), the
host asks that index for the requirements a bundle carries no wheel for. `PackageIndex.wheels(name)` lists a
project's wheels as `WheelRef`s: only files whose name is a wheel's, that have a sha256 and are not yanked. A
wheel's `read()` downloads it, holds it to the sha256 the index listed, and keeps it in
`<downloads>/<sha256>/<file>` (written to a temporary file first, then renamed into place), where the next `read()`
finds it without asking the network.

Only the standard library (`urllib.request`, `html.parser`, `json`) and `packaging` are used: xcore ships as one
PyInstaller binary, and an HTTP client library would be one more thing to freeze into it for a feature that is off
by default. Every failure to ask the index or to understand its answer is an `IndexUnavailable` naming the URL and
what went wrong, in one line.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from functools import partial
from html.parser import HTMLParser
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any, NamedTuple

from packaging.utils import canonicalize_name

from xcore import __version__
from xcore.paths import write_atomically
from xcore.plugins.contract import MAX_LIBRARIES
from xcore.plugins.lock import WheelError, parse_wheel_name
from xcore.plugins.wheels import SOURCE_INDEX, WheelRef

ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
USER_AGENT = f"xcore/{__version__}"
MAX_PAGE = 64 * 1024 * 1024  # the most bytes one project's page may have (PyPI's largest have a few MB)
CHUNK = 64 * 1024
SCHEMES = ("http", "https")
PROJECT_NAME = re.compile(r"[a-z0-9]|[a-z0-9][a-z0-9._-]*[a-z0-9]", re.IGNORECASE)  # PEP 508
SHA256 = re.compile(r"[0-9a-f]{64}")


class IndexUnavailable(Exception):
    """IndexUnavailable is a package index that could not be asked, or whose answer is wrong: `url` is the URL
    asked (without credentials) and `reason` what went wrong, in one line."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = _without_credentials(url), " ".join(reason.split())
        super().__init__(f"package index: {self.url}: {self.reason}")


class _NotFound(IndexUnavailable):
    """_NotFound is an HTTP 404: for a project's page, the index does not have the project."""


class _Listed(NamedTuple):
    """_Listed is one file of a project's page, as the page gives it."""

    file: str
    url: str  # absolute, without its fragment
    sha256: str | None
    requires_python: str | None
    yanked: bool
    size: int  # -1 when the page does not give it


class PackageIndex:
    """PackageIndex is the "simple" package index at `url` (its root, e.g. `https://pypi.org/simple`; credentials
    in it are sent to that host only), whose wheels are kept in `downloads`. `timeout` is the seconds to wait for a
    connection or for data; `max_bytes` the most bytes one download may have. Raises ValueError when `url` is not
    an http:// or https:// URL."""

    def __init__(self, url: str, downloads: Path, *, timeout: float = 30.0, max_bytes: int = MAX_LIBRARIES) -> None:
        self.url, self._authorization = _index_root(url)
        self.downloads = downloads
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._listings: dict[str, list[WheelRef]] = {}

    def __repr__(self) -> str:
        return f"PackageIndex({self.url!r})"

    def wheels(self, name: str) -> list[WheelRef]:
        """wheels are the wheels the index lists for project `name` that have a sha256, are not yanked and whose
        file name parses, in the page's order; [] when the index does not have the project (HTTP 404). The page is
        asked once per project for this object's lifetime. Raises IndexUnavailable, or ValueError for a `name`
        that is not a project's."""
        project = _project(name)
        if project not in self._listings:
            self._listings[project] = self._list(project)
        return list(self._listings[project])

    def _list(self, project: str) -> list[WheelRef]:
        try:
            page, content_type, text = self._page(urllib.parse.urljoin(self.url, f"{project}/"))
        except _NotFound:
            return []
        listed = _parse_json(text, page) if content_type.endswith("json") else _parse_html(text, page)
        return [ref for item in listed if (ref := self._ref(project, item)) is not None]

    def _ref(self, project: str, item: _Listed) -> WheelRef | None:
        if item.sha256 is None or not _usable(item):
            return None
        try:
            name, version, tags = parse_wheel_name(item.file)
        except WheelError:
            return None
        if name != project:
            return None
        read = partial(self._read, item.file, item.url, item.sha256)
        file, sha256, size = item.file, item.sha256, item.size
        return WheelRef(file, name, version, tags, sha256, size, SOURCE_INDEX, read, item.requires_python)

    def _page(self, url: str) -> tuple[str, str, str]:
        """_page is (URL after redirects, content type, text) of the page at `url`."""
        with self._open(url, ACCEPT) as response:
            body = _read_at_most(response, MAX_PAGE, url, "the page")
            page: str = response.url
            headers: Message = response.headers
        charset = headers.get_content_charset() or "utf-8"
        try:
            return page, headers.get_content_type(), body.decode(charset)
        except (LookupError, UnicodeDecodeError) as exc:
            raise IndexUnavailable(page, f"the page is not {charset} text ({exc})") from None

    def _read(self, file: str, url: str, sha256: str) -> bytes:
        """_read is the wheel's bytes: kept ones when their sha256 is right, else downloaded, checked and kept."""
        path = self.downloads / sha256 / file
        kept = _kept(path, sha256)
        if kept is not None:
            return kept
        with self._open(url, "*/*") as response:
            data = _read_at_most(response, self.max_bytes, url, file)
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise IndexUnavailable(url, f"{file} has sha256 {digest}, but the index lists sha256 {sha256}")
        write_atomically(path, data)
        return data

    @contextmanager
    def _open(self, url: str, accept: str) -> Iterator[Any]:
        """_open yields the response to a GET of `url`, with the index's credentials when `url` is on its host;
        raises IndexUnavailable (_NotFound for HTTP 404)."""
        request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": USER_AGENT})
        if self._authorization and _origin(url) == _origin(self.url):
            request.add_unredirected_header("Authorization", self._authorization)
        with opened(request, self.timeout) as response:
            yield response


@contextmanager
def opened(request: urllib.request.Request, timeout: float) -> Iterator[Any]:
    """opened yields the response to `request`, following redirects to http and https URLs only; raises
    IndexUnavailable naming the URL and what went wrong in one line (_NotFound for HTTP 404)."""
    url = request.full_url
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            yield response
    except urllib.error.HTTPError as exc:
        exc.close()
        raise (_NotFound if exc.code == 404 else IndexUnavailable)(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise IndexUnavailable(url, _why(exc.reason, timeout)) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise IndexUnavailable(url, _why(exc, timeout)) from None


def fetch(url: str, limit: int, timeout: float) -> bytes:
    """fetch is the body of a GET of an http(s) URL, at most `limit` bytes; raises IndexUnavailable saying why
    not (the package index's downloads and the catalogues use it)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with opened(request, timeout) as response:
        return _read_at_most(response, limit, url, "the answer")


def _why(reason: object, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """_HttpOnlyRedirects follows redirects to http and https URLs only (urllib's own follows ftp ones too)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise urllib.error.URLError(f"redirected to {newurl}, which is not an http or https URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _index_root(url: str) -> tuple[str, str | None]:
    """_index_root is (the index's root URL ending in "/", without credentials; the Authorization header for the
    credentials it had, or None); raises ValueError when `url` is not an http:// or https:// URL."""
    parts = urllib.parse.urlsplit(url.strip())
    try:
        ok = parts.scheme.lower() in SCHEMES and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number
        ok = False
    if not ok:
        raise ValueError(
            f"package index URL {_without_credentials(url)!r} is not an http:// or https:// URL of a simple index, "
            "e.g. https://pypi.org/simple"
        )
    path = parts.path if parts.path.endswith("/") else f"{parts.path}/"
    root = urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.rpartition("@")[2], path, "", ""))
    if parts.username is None:
        return root, None
    user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
    return root, "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host)) if host != parts.netloc else url


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _project(name: str) -> str:
    """_project is `name` normalized as PEP 503 says; raises ValueError when it is not a project's name."""
    if not PROJECT_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not the name of a Python project")
    return canonicalize_name(name)


def _usable(item: _Listed) -> bool:
    """_usable says whether `item` is a wheel xcore may use: not yanked, a plain file name, an http(s) URL."""
    plain = item.file.endswith(".whl") and "/" not in item.file and "\\" not in item.file
    return plain and not item.yanked and urllib.parse.urlsplit(item.url).scheme.lower() in SCHEMES


def _read_at_most(response: IO[bytes], limit: int, url: str, what: str) -> bytes:
    """_read_at_most is the response's body; raises IndexUnavailable once it passes `limit` bytes."""
    chunks, total = [], 0
    while chunk := response.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise IndexUnavailable(url, f"{what} is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _kept(path: Path, sha256: str) -> bytes | None:
    """_kept is the bytes of the download kept at `path` when it is there with this sha256, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _sha256(value: object) -> str | None:
    return value.lower() if isinstance(value, str) and SHA256.fullmatch(value.lower()) else None


def _parse_json(text: str, page: str) -> list[_Listed]:
    """_parse_json is the files of a PEP 691 project page; raises IndexUnavailable when it is not one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise IndexUnavailable(page, f"the page is not JSON ({exc})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise IndexUnavailable(page, 'the page is not a PEP 691 project page (it has no "files" list)')
    version = data.get("meta", {}).get("api-version") if isinstance(data.get("meta"), dict) else None
    if isinstance(version, str) and not version.startswith("1."):
        raise IndexUnavailable(page, f"the page is in version {version} of the simple API; xcore reads version 1")
    return [item for raw in files if (item := _json_file(raw, page)) is not None]


def _json_file(raw: object, page: str) -> _Listed | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("filename"), str) or not isinstance(raw.get("url"), str):
        return None
    hashes, requires, size = raw.get("hashes"), raw.get("requires-python"), raw.get("size")
    return _Listed(
        file=raw["filename"],
        url=urllib.parse.urldefrag(urllib.parse.urljoin(page, raw["url"])).url,
        sha256=_sha256(hashes.get("sha256")) if isinstance(hashes, dict) else None,
        requires_python=requires if isinstance(requires, str) and requires.strip() else None,
        yanked=raw.get("yanked") not in (None, False),  # True, or a string giving the reason
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else -1,
    )


class _Links(HTMLParser):
    """_Links collects a page's anchors (their attributes, unescaped, and text) and its `<base href>`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._anchor: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            self._anchor, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._anchor is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._anchor is not None:
            self.anchors.append((self._anchor, "".join(self._text).strip()))
            self._anchor = None


def _parse_html(text: str, page: str) -> list[_Listed]:
    """_parse_html is the files of a PEP 503 project page: its anchors that have an href."""
    links = _Links()
    links.feed(text)
    links.close()
    base = urllib.parse.urljoin(page, links.base) if links.base else page
    return [_html_file(attrs, text, base) for attrs, text in links.anchors if attrs.get("href")]


def _html_file(attrs: dict[str, str | None], text: str, base: str) -> _Listed:
    url, fragment = urllib.parse.urldefrag(urllib.parse.urljoin(base, attrs["href"] or ""))
    algorithm, _, digest = fragment.partition("=")
    return _Listed(
        file=text or urllib.parse.unquote(urllib.parse.urlsplit(url).path.rpartition("/")[2]),
        url=url,
        sha256=_sha256(digest) if algorithm == "sha256" else None,
        requires_python=attrs.get("data-requires-python") or None,
        yanked="data-yanked" in attrs,
        size=-1,
    )
