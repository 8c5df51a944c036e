"""The common alternative: one FastAPI route returning the same JSON, served by uvicorn.

Started by benchmarks/http.py; xcore's /api/version is compared against it.
"""

from fastapi import FastAPI

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
