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


class ConfigError(BneckError, ValueError):
    """An option has a value outside its allowed set."""


def did_you_mean(received, allowed) -> str:
    """Return " Did you mean 'x'?" for the allowed value closest to ``received`` (spelling,
    case, '_' or '-' aside), or "" when none is close."""
    import difflib
    import os

    def plain(value) -> str:
        return str(value).lower().replace("_", "").replace("-", "").replace(" ", "")

    by_plain = {plain(a): a for a in allowed}
    if plain(received) in by_plain:
        return f" Did you mean {by_plain[plain(received)]!r}?"
    close = difflib.get_close_matches(plain(received), list(by_plain), n=1, cutoff=0.6)
    if not close:  # 'logistic' -> 'logreg': the longest shared start of three letters or more
        shared = {p: len(os.path.commonprefix([p, plain(received)])) for p in by_plain}
        best = max(shared.values(), default=0)
        close = [p for p, n in shared.items() if n == best] if best >= 3 else []
    return f" Did you mean {by_plain[close[0]]!r}?" if len(close) == 1 and plain(received) else ""


def choice_error(what: str, allowed, received) -> ConfigError:
    """Return a ConfigError for an option whose value is not one of ``allowed`` (with the closest one)."""
    allowed_text = ", ".join(repr(a) for a in allowed)
    return ConfigError(
        f"{what} must be one of {allowed_text}. Received: {what}={received!r}.{did_you_mean(received, allowed)}"
    )


class BneckWarning(UserWarning):
    """Something bneck worked around and a user should know of (a damaged cache chunk skipped, ...).

    Library code warns with ``warnings.warn(message, BneckWarning)`` and reports progress through
    ``logging.getLogger(__name__)``; it never prints. The command line decides what reaches the
    terminal (``warnings.simplefilter("ignore", bneck.BneckWarning)`` silences them in a script).
    """
