"""Errors of plugin management that reach users: each carries the HTTP status an admin route answers with."""

from __future__ import annotations

from xcore.errors import RequestError


class PluginError(RequestError):
    """PluginError is a refused plugin operation; `status` is its HTTP status, `field` the input at fault."""


class PluginNotFound(PluginError):
    """PluginNotFound names a plugin id that has no bundle and no state on this host."""

    status = 404


class PluginUnavailable(PluginError):
    """PluginUnavailable is a plugin operation asked of a process that does not manage plugins."""

    status = 503


class PluginConflict(PluginError):
    """PluginConflict is an operation that cannot apply to the plugin as it is (a dev folder cannot be deleted)."""

    status = 409


class PluginStorageError(PluginError):
    """PluginStorageError is a bundle this host cannot store or extract because of its own disk (full, read-only,
    no permission): not the bundle's fault."""

    status = 507
