"""The HTTP layer: the Switch (the ASGI entry of a worker), the Litestar app it serves, and the core routes."""
