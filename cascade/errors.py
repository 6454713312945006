"""Errors that users cause, each with a one-line message naming the file, key or value at fault.

Scripts catch `CascadeError` at the top level and print `error: <message>` instead of a traceback.
"""


class CascadeError(ValueError):
    """Base class of every user-facing error in cascade."""


class ConfigError(CascadeError):
    """A config file or override is unknown, mistyped or impossible."""


class DataError(CascadeError):
    """A dataset, folder or image file cannot be used."""


class CheckpointError(CascadeError):
    """A checkpoint, model folder or pipeline folder is missing or unreadable."""
