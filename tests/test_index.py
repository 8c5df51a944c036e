"""The package index client (xcore.plugins.index) against a real HTTP server on 127.0.0.1: PEP 503 HTML and PEP 691
JSON pages, wheels built here, downloads checked and kept, and every way the index can fail."""

from __future__ import annotations

import hashlib
import html
import io
import json
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.tags import Tag
from packaging.version import Version

from xcore.plugins.contract import MAX_LIBRARIES
from xcore.plugins.index import ACCEPT, IndexUnavailable, PackageIndex
from xcore.plugins.wheels import SOURCE_INDEX

HTML = "text/html; charset=utf-8"
JSON = "application/vnd.pypi.simple.v1+json"
ANY = frozenset({Tag("py3", "none", "any")})


def make_wheel(name: str, version: str, tag: str = "py3-none-any") -> tuple[str, bytes]:
    """make_wheel is (file name, bytes) of a minimal wheel of package `name`."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in {**files, f"{dist}/RECORD": record}.items():
            archive.writestr(path, text)
    return f"{name}-{version}-{tag}.whl", buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Server:
    """Server is a real HTTP server: `routes` maps a path to (status, headers, body); `asked` lists the paths and
    headers of the requests it got."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    asked: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # ends the answers of "/hang/" paths
    httpd: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def page(self, path: str, body: str, content_type: str = HTML) -> None:
        self.routes[path] = (200, {"Content-Type": content_type}, body.encode())

    def file(self, path: str, data: bytes) -> None:
        self.routes[path] = (200, {"Content-Type": "application/octet-stream"}, data)

    def paths(self) -> list[str]:
        return [path for path, _ in self.asked]

    def stop(self) -> None:
        if self.httpd is not None:
            self.release.set()
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.asked.append((self.path, dict(self.headers.items())))
            if self.path.startswith("/hang/"):
                server.release.wait(5)
                return
            status, headers, body = server.routes.get(self.path, (404, {}, b"not found"))
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    served = Server()
    served.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(served))
    threading.Thread(target=served.httpd.serve_forever, args=(0.01,), daemon=True).start()
    yield served
    served.stop()


def anchor(href: str, text: str, extra: str = "") -> str:
    return f'<a href="{html.escape(href)}"{extra}>{html.escape(text)}</a><br/>'


ALPHA_10, ALPHA_11 = make_wheel("alpha", "1.0"), make_wheel("alpha", "1.1")


@pytest.fixture
def alpha(server: Server) -> Server:
    """alpha is a PEP 503 page with two usable wheels and every kind of file to leave out."""
    yanked, hashless, other = make_wheel("alpha", "0.9"), make_wheel("alpha", "0.8"), make_wheel("other", "1.0")
    for file, data in (ALPHA_10, ALPHA_11, yanked, hashless, other):
        server.file(f"/files/{file}", data)
    links = [
        anchor(f"{server.base}/files/{ALPHA_10[0]}#sha256={sha(ALPHA_10[1])}", ALPHA_10[0]),
        anchor(f"../../files/{ALPHA_11[0]}#sha256={sha(ALPHA_11[1])}", ALPHA_11[0]),
        anchor(f"/files/{yanked[0]}#sha256={sha(yanked[1])}", yanked[0], ' data-yanked=""'),
        anchor(f"/files/{hashless[0]}", hashless[0]),
        anchor(f"/files/{other[0]}#sha256={sha(other[1])}", other[0]),
        anchor(f"/files/alpha-1.0.tar.gz#sha256={'a' * 64}", "alpha-1.0.tar.gz"),
        anchor(f"/files/alpha-notaversion-py3-none-any.whl#sha256={'b' * 64}", "alpha-notaversion-py3-none-any.whl"),
    ]
    links[0] = links[0].replace("<a ", '<a data-requires-python="&gt;=3.8, &lt;4" ', 1)
    server.page("/simple/alpha/", f"<!DOCTYPE html><html><body><h1>alpha</h1>{''.join(links)}</body></html>")
    return server


def index_of(server: Server, tmp_path: Path, max_bytes: int = MAX_LIBRARIES) -> PackageIndex:
    return PackageIndex(f"{server.base}/simple", tmp_path / "downloads", max_bytes=max_bytes)


def test_html_page_lists_usable_wheels(alpha: Server, tmp_path: Path) -> None:
    wheels = index_of(alpha, tmp_path).wheels("alpha")
    assert [w.file for w in wheels] == [ALPHA_10[0], ALPHA_11[0]]
    assert [(w.name, w.version, w.tags) for w in wheels] == [
        ("alpha", Version("1.0"), ANY),
        ("alpha", Version("1.1"), ANY),
    ]
    assert [w.sha256 for w in wheels] == [sha(ALPHA_10[1]), sha(ALPHA_11[1])]
    assert [w.requires_python for w in wheels] == [">=3.8, <4", None]
    assert {(w.source, w.size) for w in wheels} == {(SOURCE_INDEX, -1)}


def test_json_page_lists_usable_wheels(server: Server, tmp_path: Path) -> None:
    pure, native = make_wheel("beta_pkg", "2.0"), make_wheel("beta_pkg", "2.1", "cp311-cp311-manylinux_2_17_x86_64")
    server.file(f"/files/{pure[0]}", pure[1])
    files = [
        {"filename": pure[0], "url": f"../../files/{pure[0]}", "hashes": {"sha256": sha(pure[1])},
         "requires-python": ">=3.10", "size": len(pure[1])},
        {"filename": native[0], "url": f"{server.base}/files/{native[0]}", "hashes": {"sha256": sha(native[1])}},
        {"filename": "beta_pkg-1.9-py3-none-any.whl", "url": "/x.whl", "hashes": {"sha256": "c" * 64}, "yanked": "bad"},
        {"filename": "beta_pkg-1.8-py3-none-any.whl", "url": "/y.whl", "hashes": {"sha256": "d" * 64}, "yanked": True},
        {"filename": "beta_pkg-1.7-py3-none-any.whl", "url": "/z.whl", "hashes": {"md5": "e" * 32}},
        {"filename": "beta_pkg-2.0.tar.gz", "url": "/beta_pkg-2.0.tar.gz", "hashes": {"sha256": "f" * 64}},
    ]  # fmt: skip
    page = {"meta": {"api-version": "1.1"}, "name": "beta-pkg", "files": files}
    server.page("/simple/beta-pkg/", json.dumps(page), JSON)
    wheels = index_of(server, tmp_path).wheels("Beta_Pkg")
    assert server.paths() == ["/simple/beta-pkg/"]
    assert [(w.file, w.name, w.version) for w in wheels] == [
        (pure[0], "beta-pkg", Version("2.0")),
        (native[0], "beta-pkg", Version("2.1")),
    ]
    assert wheels[0].tags == ANY and wheels[1].tags == {Tag("cp311", "cp311", "manylinux_2_17_x86_64")}
    assert [(w.sha256, w.size, w.requires_python) for w in wheels] == [
        (sha(pure[1]), len(pure[1]), ">=3.10"),
        (sha(native[1]), -1, None),
    ]
    assert wheels[0].read() == pure[1]  # its relative URL is joined to the page's


def test_request_names_xcore_and_the_formats_it_reads(alpha: Server, tmp_path: Path) -> None:
    index_of(alpha, tmp_path).wheels("alpha")
    headers = {k.lower(): v for k, v in alpha.asked[0][1].items()}
    assert headers["accept"] == ACCEPT
    assert headers["user-agent"].startswith("xcore/")


def test_listing_is_asked_once_per_project(alpha: Server, tmp_path: Path) -> None:
    index = index_of(alpha, tmp_path)
    assert index.wheels("alpha") == index.wheels("ALPHA")
    assert alpha.paths() == ["/simple/alpha/"]


def test_project_the_index_does_not_have_is_empty(server: Server, tmp_path: Path) -> None:
    assert index_of(server, tmp_path).wheels("nothere") == []
    assert server.paths() == ["/simple/nothere/"]


def test_read_downloads_checks_and_keeps_the_wheel(alpha: Server, tmp_path: Path) -> None:
    wheel = index_of(alpha, tmp_path).wheels("alpha")[1]  # listed with a relative href
    assert wheel.read() == ALPHA_11[1]
    assert alpha.paths()[-1] == f"/files/{ALPHA_11[0]}"
    folder = tmp_path / "downloads" / sha(ALPHA_11[1])
    assert [p.name for p in folder.iterdir()] == [ALPHA_11[0]]  # no temporary file left
    assert (folder / ALPHA_11[0]).read_bytes() == ALPHA_11[1]
    alpha.stop()
    assert wheel.read() == ALPHA_11[1]


def test_kept_wheel_with_wrong_bytes_is_downloaded_again(alpha: Server, tmp_path: Path) -> None:
    wheel = index_of(alpha, tmp_path).wheels("alpha")[0]
    kept = tmp_path / "downloads" / wheel.sha256 / wheel.file
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"truncated")
    assert wheel.read() == ALPHA_10[1]
    assert kept.read_bytes() == ALPHA_10[1]
    assert alpha.paths()[-1] == f"/files/{ALPHA_10[0]}"


def test_relative_links_are_joined_to_the_page_after_redirects(server: Server, tmp_path: Path) -> None:
    file, data = make_wheel("gamma", "1.0")
    server.routes["/simple/gamma/"] = (302, {"Location": "/mirror/gamma/"}, b"")
    server.page("/mirror/gamma/", anchor(f"{file}#sha256={sha(data)}", file))
    server.file(f"/mirror/gamma/{file}", data)
    [wheel] = index_of(server, tmp_path).wheels("gamma")
    assert wheel.read() == data
    assert server.paths() == ["/simple/gamma/", "/mirror/gamma/", f"/mirror/gamma/{file}"]


def test_download_with_another_sha256_is_refused(server: Server, tmp_path: Path) -> None:
    (file, data), listed = make_wheel("delta", "1.0"), sha(b"what the index meant")
    server.file(f"/files/{file}", data)
    server.page("/simple/delta/", anchor(f"/files/{file}#sha256={listed}", file))
    [wheel] = index_of(server, tmp_path).wheels("delta")
    with pytest.raises(IndexUnavailable) as raised:
        wheel.read()
    assert file in str(raised.value) and sha(data) in str(raised.value) and listed in str(raised.value)
    assert f"{server.base}/files/{file}" in str(raised.value)
    assert not (tmp_path / "downloads" / listed / file).exists()


def test_download_over_the_limit_is_refused(alpha: Server, tmp_path: Path) -> None:
    wheel = index_of(alpha, tmp_path, max_bytes=100).wheels("alpha")[0]
    with pytest.raises(IndexUnavailable, match="over the limit of 100 bytes") as raised:
        wheel.read()
    assert ALPHA_10[0] in str(raised.value)
    assert not (tmp_path / "downloads" / wheel.sha256 / wheel.file).exists()


def test_server_error_names_the_url_and_status(server: Server, tmp_path: Path) -> None:
    server.routes["/simple/broken/"] = (500, {}, b"oops")
    with pytest.raises(IndexUnavailable) as raised:
        index_of(server, tmp_path).wheels("broken")
    assert str(raised.value) == f"package index: {server.base}/simple/broken/: HTTP 500 Internal Server Error"


def test_index_that_is_down_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(IndexUnavailable, match="refused") as raised:
        PackageIndex(f"http://127.0.0.1:{port}/simple/", tmp_path).wheels("alpha")
    assert f"http://127.0.0.1:{port}/simple/alpha/" in str(raised.value)
    assert "\n" not in str(raised.value) and "Traceback" not in str(raised.value)


def test_index_that_does_not_answer_times_out(server: Server, tmp_path: Path) -> None:
    index = PackageIndex(f"{server.base}/hang/", tmp_path, timeout=0.2)
    with pytest.raises(IndexUnavailable, match=r"no answer within 0\.2 s") as raised:
        index.wheels("slow")
    assert f"{server.base}/hang/slow/" in str(raised.value)


def test_page_that_is_not_json_is_refused(server: Server, tmp_path: Path) -> None:
    server.page("/simple/garbled/", "<html>not json</html>", JSON)
    with pytest.raises(IndexUnavailable, match="the page is not JSON"):
        index_of(server, tmp_path).wheels("garbled")


def test_credentials_go_to_the_index_and_stay_out_of_messages(server: Server, tmp_path: Path) -> None:
    server.routes["/simple/private/"] = (403, {}, b"")
    index = PackageIndex(server.base.replace("//", "//me:s3cret@") + "/simple", tmp_path)
    with pytest.raises(IndexUnavailable) as raised:
        index.wheels("private")
    assert "s3cret" not in str(raised.value) and "s3cret" not in repr(index)
    assert server.asked[0][1]["Authorization"] == "Basic bWU6czNjcmV0"  # base64 of "me:s3cret"


def test_root_with_or_without_trailing_slash(tmp_path: Path) -> None:
    with_slash = PackageIndex("https://example.org/simple/", tmp_path)
    assert with_slash.url == PackageIndex("https://example.org/simple", tmp_path).url == "https://example.org/simple/"


@pytest.mark.parametrize(
    "url", ["ftp://example.org/simple", "file:///srv/simple", "example.org/simple", "http://", "http://host:port/"]
)
def test_bad_index_url_is_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not an http:// or https:// URL"):
        PackageIndex(url, tmp_path)
