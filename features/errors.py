"""User-facing errors.

Every error a user can cause is a :class:`BneckError` whose message is one
paragraph naming the thing, the allowed values and what was received. The
command line prints the message and exits with code 2 instead of a traceback.
"""


class BneckError(Exception):
    """A mistake in the user's input, files or environment (exit code 2)."""


class DatasetError(BneckError):
    """The image folder is missing, empty or inconsistent."""


class WeightsError(BneckError):
    """Backbone weights cannot be found, downloaded or loaded."""


class FeatureFileError(BneckError):
    """A feature file is missing, incomplete, from another schema or tampered with."""


class StorageError(BneckError):
    """The disk refused a write: full, file too large, read-only or no permission."""


class ConfigError(BneckError):
    """An option has a value outside its allowed set."""


def choice_error(what: str, allowed, received) -> ConfigError:
    """Return a ConfigError for an option whose value is not one of ``allowed``."""
    allowed_text = ", ".join(repr(a) for a in allowed)
    return ConfigError(f"{what} must be one of {allowed_text}. Received: {what}={received!r}.")
