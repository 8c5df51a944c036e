"""What route handlers take from a request: the auth service, the client, and the acting user."""

from __future__ import annotations

from typing import Any

from litestar import Request

from xcore.auth.errors import Forbidden
from xcore.auth.rules import Principal
from xcore.auth.service import AuthService, Client


def service(request: Request[Any, Any, Any]) -> AuthService:
    """service is the AuthService of this process."""
    auth: AuthService = request.app.state.runtime.auth
    return auth


def client_of(request: Request[Any, Any, Any]) -> Client:
    """client_of is the client address and user agent, for the audit log and the address lockout. Behind a trusted
    reverse proxy (`server.trusted_proxies`), the address is the one the proxy forwarded."""
    return Client(ip=request.client.host if request.client else None, user_agent=request.headers.get("user-agent"))


def actor(request: Request[Any, Any, Any], permission: str | None = None) -> Principal:
    """actor is the logged-in user the guard let through; with `permission`, they must also hold it."""
    principal: Principal = request.scope["user"]
    if permission and not principal.holds(permission):
        raise Forbidden(f"this needs the permission {permission}, which your roles do not grant")
    return principal
