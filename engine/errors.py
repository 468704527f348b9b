"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class LrfrError(Exception):
    """Base class: a problem with the user's input, files or environment, not a bug."""


class ConfigError(LrfrError):
    """An unknown key, a bad value or an unknown preset."""


class DatasetError(LrfrError):
    """A missing, unregistered, malformed or unreadable dataset file."""


class TrainingDiverged(LrfrError):
    """The loss became NaN or infinite."""
