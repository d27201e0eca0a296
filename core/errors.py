"""One small error hierarchy. Messages name the file or value and say what to do."""


class StudioError(Exception):
    """Base error of the project. ``str(err)`` is a one-line, user-facing message."""

    kind = "error"


class DataError(StudioError):
    """A dataset, file or value on disk is missing, malformed or inconsistent."""

    kind = "data"


class ModelError(StudioError):
    """A model spec cannot be resolved, loaded or used as asked."""

    kind = "model"


class ConfigError(StudioError):
    """A parameter or spec given by the user is invalid."""

    kind = "config"


class JobError(StudioError):
    """A background job failed or its run folder is unusable."""

    kind = "job"
