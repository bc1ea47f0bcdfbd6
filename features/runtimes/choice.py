"""``--runtime auto``: the one decision both ``bneck extract`` and ``bneck predict`` make.

The rules, in order: a reduced precision runs on the runtime that computes it; the Ray
engine runs the reference; a candidate whose packages are missing is not taken (said
with its install hint); a candidate whose model for this extractor is already built and
checked on this CPU is taken at no cost; one whose conversion pays off from the data
set's size (``Runtime.auto_from_images``) is converted and checked before its first row;
otherwise the reference (TensorFlow) runs. ``predict`` never converts: a handful of
images does not pay for it.
"""

from __future__ import annotations

from bneck.features.runtimes.registry import Runtime, get_registered, known_runtime, reference_runtime, runtime_names

UNDECIDED = ("auto", "")


def _candidates() -> list[Runtime]:
    return [r for r in map(get_registered, runtime_names()) if r.auto_candidate]


def choose_runtime(
    asked: str,
    *,
    precision: str = "fp32",
    engine: str = "local",
    spec=None,
    cache_dir: str | None = None,
    images: int | None = None,
    converts: bool = True,
) -> tuple[str, str]:
    """Return (the runtime that computes the rows, why).

    ``asked`` is a runtime's name or ``auto``. Without ``spec`` only the options decide, and
    ``UNDECIDED`` comes back where the cache or the data must; with ``spec`` and ``cache_dir``
    a candidate checked here is taken; with ``images`` (and ``converts``) a set large enough
    pays for converting. Raises ConfigError for an unknown name (with the closest one).
    """
    known_runtime(asked)
    if asked != "auto":
        first_use = get_registered(asked).first_use
        return asked, "asked for" + (f" ({first_use})" if first_use and not converts else "")
    reference, candidates = reference_runtime(), _candidates()
    if precision != "fp32":
        able = next((r for r in map(get_registered, runtime_names()) if precision in r.precisions), reference)
        return able.name, f"auto: {precision} runs on {able.label}"
    if engine == "ray":
        return reference.name, f"auto: the Ray engine runs {reference.label}"
    installed = [r for r in candidates if r.available]
    if candidates and not installed:
        return reference.name, f"auto: {candidates[0].label} is not installed ({candidates[0].install})"
    if spec is None:
        return UNDECIDED
    for runtime in installed:
        if runtime.ready_here is not None and runtime.ready_here(spec, cache_dir):
            return runtime.name, f"auto: {runtime.ready_why}"
    if not converts:
        return reference.name, next(
            (r.not_ready_why for r in installed if r.not_ready_why),
            f"auto: no runtime is checked on this CPU; {reference.label} runs",
        )
    return _by_size(reference, installed, images)


def _by_size(reference: Runtime, installed: list[Runtime], images: int | None) -> tuple[str, str]:
    """The first candidate whose conversion the data set's size pays for; the reference otherwise."""
    sized = [r for r in installed if r.auto_from_images is not None]
    for runtime in sized:
        if images is not None and images >= runtime.auto_from_images:
            return runtime.name, (
                f"auto: {images} images, enough to pay for converting once (checked before its first row)"
            )
    if not sized:
        return reference.name, f"auto: no other runtime is installed; {reference.label} runs"
    other = sized[0]
    return reference.name, (
        f"auto: {images} images, too few to pay for converting to {other.label} (from "
        f"{other.auto_from_images}; --runtime {other.name} converts anyway)"
    )
