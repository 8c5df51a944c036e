"""/docs, /redoc and /openapi.json work offline: no page references an outside host."""

from __future__ import annotations

import re
from collections.abc import Iterator

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
