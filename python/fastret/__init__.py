"""fastret: fast, durable delivery of Salt job returns and events.

Importing this package is cheap: the compiled core is loaded on first use, and no thread,
connection or file is opened until a returner hands over its first record.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "ConfigError", "native"]


class ConfigError(ValueError):
    """A fastret configuration is invalid. The message names the sink and the key."""


def native():
    """The compiled core module (loaded on first call)."""
    from fastret import _native  # noqa: PLC0415 - deliberately lazy

    return _native
