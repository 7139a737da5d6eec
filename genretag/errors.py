"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class ConfigError(ValueError):
    """A setting, path or file the user gave is wrong; the message names it and says what to do."""
