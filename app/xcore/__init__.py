"""xcore: a plugin-host appliance. Litestar on Granian, an embedded Huey scheduler, hot-reloaded zip plugins."""

__version__ = "0.1.0"
