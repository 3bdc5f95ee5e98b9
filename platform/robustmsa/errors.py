"""The one error type for bad user input: config, data, model names, tracking URIs.

The command line prints it as one line and exits non-zero; the message always names the
offending file, field or value.
"""


class RobustMSAError(Exception):
    """Bad input from the user. Its message names the file, field or value at fault."""


class ConfigError(RobustMSAError):
    """A study config or override is malformed: the message starts with the key path."""


class DataError(RobustMSAError):
    """A dataset is missing, corrupt or inconsistent: the message names file, row and field."""
