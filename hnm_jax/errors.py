"""ConfigError: the one error of a bad config value, raised at every layer (stdlib only, no project import).

Its message starts with the dotted key (e.g. 'loss.temperature: must be > 0'), so the CLI prints one line naming it.
"""


class ConfigError(ValueError):
    """A bad config value; the message starts with the dotted key, e.g. 'loss.temperature: must be > 0'."""
