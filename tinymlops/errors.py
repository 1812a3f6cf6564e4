"""One exception family. Every message is a single line a user can act on."""


class TinyMLOpsError(Exception):
    """Base class: the CLI prints str(error) on one line and exits 1."""


class ConfigError(TinyMLOpsError):
    """A params or config file is missing, malformed or has a wrong key/type."""


class DataError(TinyMLOpsError):
    """A dataset file is unreadable or fails validation."""


class ModelError(TinyMLOpsError):
    """A model file is not a usable model, or a model fails a quality gate."""


class VersioningError(TinyMLOpsError):
    """git or DVC could not record or push a version."""
