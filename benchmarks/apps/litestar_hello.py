"""The bare baseline: one Litestar route returning a small JSON object, no logging, no OpenAPI.

Served by Granian from benchmarks/http.py; xcore's /api/version is compared against it.
"""

from litestar import Litestar, get


@get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


app = Litestar([hello], logging_config=None, openapi_config=None)
