"""User-facing errors.

Every error a user can fix (bad config, missing data, mismatched checkpoint or class-means file) is an
:class:`NdkdError`. The CLI prints its message on one line and exits non-zero; anything else is a bug
and is reported as an internal error.
"""


class NdkdError(Exception):
    """An error caused by the user's input; the message says what is wrong and how to fix it."""


class ConfigError(NdkdError):
    """A config file or command-line override is invalid."""


class DataError(NdkdError):
    """A dataset cannot be found or read."""


class CheckpointError(NdkdError):
    """A weights or checkpoint file does not fit the model it is loaded into."""


class ClassMeansError(NdkdError):
    """A class-means file is unreadable or does not fit the teacher."""


class TrainingError(NdkdError):
    """Training cannot go on (for example the loss became NaN)."""
