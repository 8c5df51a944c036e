"""/docs, /redoc and /openapi.json work offline: no page references an outside host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from xcore.runtime import Runtime
from xcore.web.app import build_app

ATTRIBUTE_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)""", re.IGNORECASE)
ABSOLUTE = re.compile(r"""(?:https?:)?//[a-z0-9.-]+""", re.IGNORECASE)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(build_app(runtime)) as test_client:
        yield test_client


def referenced_urls(html: str) -> list[str]:
    return ATTRIBUTE_URL.findall(html) + CSS_URL.findall(html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_reference_no_outside_host(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    outside = ABSOLUTE.findall(html)
    assert outside == [], f"{page} references outside hosts: {outside}"
    urls = referenced_urls(html)
    assert urls, f"{page} loads its assets from xcore"
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, f"{page} needs {url}, which xcore does not serve"
        assert len(asset.content) > 500


def test_assets_have_the_right_types(client: TestClient) -> None:
    js = client.get("/static/vendor/redoc/redoc.standalone.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    css = client.get("/static/vendor/swagger-ui/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
    outside = client.get("/static/vendor/../config.json")  # no file outside the vendor folder is served
    assert outside.status_code in (401, 404, 503) and "ACCESS_RULES" not in outside.text


def test_openapi_json(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.1")
    assert "/health" in schema["paths"]
    # Swagger UI offers "Authorize" for the Bearer access token.
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The access_token returned by POST /api/auth/login.",
    }
    assert schema["security"] == [{"bearer": []}]


# ReDoc's side menu always shows Redocly's logo from their CDN; the policy blocks it before it is sent (the page
# stays offline), and the menu shows the link's text alone. Chromium reports the blocked image as a policy
# violation and a failed request: the one expected.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("page_path", "rendered"),
    [
        ("/docs", ".swagger-ui .info .title:has-text('xcore')"),  # Swagger UI drew the document
        ("/redoc", "h1:has-text('xcore')"),  # so did ReDoc
    ],
)
def test_the_docs_render_in_a_browser_under_their_policy(
    ui_server: Any, browser_context: tuple[Any, Any], page_path: str, rendered: str
) -> None:
    """The pages' Content-Security-Policy lets Swagger UI and ReDoc work from xcore's own origin: they draw the
    API's operations, with no script error and no policy violation (the context fails the test on either), and
    no request to another host."""
    context, watch = browser_context
    page = context.new_page()
    failed: list[tuple[str, str | None]] = []
    page.on("requestfailed", lambda request: failed.append((request.url, request.failure)))
    response = page.goto(ui_server.url + page_path)
    assert response.status == 200
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "'sha256-" in policy
    page.locator(rendered).first.wait_for()
    page.get_by_text("/api/admin/users").first.wait_for()  # an operation of the document is listed
    page.wait_for_timeout(500)  # late violations (images, workers) are reported too
    blocked_logo = [e for e in watch.errors if REDOC_LOGO in e and "Content Security Policy" in e]
    assert bool(blocked_logo) == (page_path == "/redoc"), watch.errors
    watch.errors[:] = [e for e in watch.errors if e not in blocked_logo]
    if page_path == "/redoc":
        assert (REDOC_LOGO, "csp") in failed, failed  # blocked by the policy: it never left the browser
        watch.requests[:] = [url for url in watch.requests if url != REDOC_LOGO]
