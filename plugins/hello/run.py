"""hello: one route, GET /app/hello/, that answers with the greeting set in config.yaml."""

from xcore.sdk import Ctx, Router, get


@get("/", sync_to_thread=False)
def greet(ctx: Ctx) -> dict[str, str]:
    """greet answers with the configured greeting; an admin's override applies without a new version."""
    return {"message": f"{ctx.config['greeting']}, world!"}


router = Router("/", route_handlers=[greet])
