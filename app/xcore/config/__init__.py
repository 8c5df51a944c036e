"""xcore's settings: one typed schema (`schema`), loaded from layered sources (`loader`)."""

from xcore.config.loader import LoadedConfig, load_config
from xcore.config.schema import XcoreConfig

__all__ = ["LoadedConfig", "XcoreConfig", "load_config"]
