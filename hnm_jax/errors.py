"""ConfigError: the one error of a bad config value, raised at every layer (stdlib only, no project import).

Its message starts with the dotted key (e.g. 'loss.temperature: must be > 0'), so the CLI prints one line naming it.
"""

from typing import NoReturn


class ConfigError(ValueError):
    """A bad config value; the message starts with the dotted key, e.g. 'loss.temperature: must be > 0'."""


def fail(key: str, message: str) -> NoReturn:
    """Raises ConfigError('<key>: <message>')."""
    raise ConfigError(f"{key}: {message}")
