"""Who may compute feature rows: one registry of runtimes, each declared once.

A runtime is a ``Runtime`` entry: its name, the optional packages it needs (with their
install hint), the precisions it computes, and how it builds the feature model of an
``ExtractorSpec``. The model is callable on a uint8 batch and describes itself through
the attributes ``FeatureModelLike`` declares. Exactly one runtime is the reference
(TensorFlow); every other one is held to it by ``build_model`` before its first row:
its fp32 numbers must equal the reference's within ``equivalence.CHECK_TOLERANCE`` on
the run's check sample, or it is refused (``RuntimeMismatch``), so rows under the fp32
key never come from a runtime that computes other numbers.

Adding a runtime is one module that calls ``register_runtime`` at import, plus its name
in ``BUILTIN`` (a third-party runtime registers itself when its module is imported, which
bneck does on the first lookup for a module declared under the ``bneck.runtimes``
entry-point group, ``bneck.core.plugins``). A
runtime whose packages are missing stays registered as unavailable: ``list_runtimes``
shows it with its install hint, and ``get_runtime`` refuses it with that hint, before
any work (Hugging Face ``datasets`` registers its unavailable formatters the same way).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bneck.core.errors import ConfigError, choice_error
from bneck.core.plugins import RUNTIMES, load_plugins

# The runtimes that come with bneck, by module: imported on the first lookup (by name, so that
# the registry imports none of them and they may import it).
BUILTIN = ("bneck.features.runtimes.tensorflow", "bneck.features.runtimes.openvino")


class FeatureModelLike(Protocol):
    """What a runtime builds: uint8 (n, size, size, 3) -> features (n, ...) in ``spec.dtype``.

    ``calls`` and ``images`` count forward passes (the check against the reference is not
    counted); ``converted`` / ``quantized`` say whether this instance had to convert or
    quantise (None: not applicable); ``equivalence`` is its check against the reference
    (None for the reference) and ``quantization_stats`` its reduced-precision check.
    """

    calls: int
    images: int
    converted: bool | None
    quantized: bool | None
    equivalence: dict | None
    quantization_stats: dict | None

    def __call__(self, images: np.ndarray) -> np.ndarray: ...

    def warm_up(self) -> None: ...


@dataclass(frozen=True)
class BuildContext:
    """What a runtime may use to build a model: the cache folder (for converted models), the int8/bf16
    calibration plan, decoding threads, and ``sample()``: uint8 images of this run to check it on."""

    cache_dir: str
    plan: object = None
    workers: int = 0
    sample: Callable[[], np.ndarray] | None = None
    verbose: bool = True


@dataclass(frozen=True)
class Runtime:
    """One runtime. ``build(spec, context)`` returns a ``FeatureModelLike``.

    ``modules`` must be importable for it to run (``precision_modules`` add some per
    precision), installed with ``install`` (or ``pip install <package>``). ``checks_itself``:
    its build checks the model against the reference and keeps the result in
    ``model.equivalence`` (OpenVINO, with this user's record of checked bytes); otherwise
    ``build_model`` checks it on every build. ``check_precision(precision)`` refuses a
    precision this CPU cannot compute. For ``--runtime auto``: ``ready_here(spec, cache_dir)``
    says its model is already built and checked here (taken at no cost, said with
    ``ready_why``, or ``not_ready_why`` where nothing is converted), and ``auto_from_images``
    is the data set size from which converting it once pays off (None: auto never converts).
    """

    name: str
    label: str
    build: Callable[..., FeatureModelLike]
    precisions: tuple = ("fp32",)
    reference: bool = False
    checks_itself: bool = False
    modules: tuple = ()
    precision_modules: Mapping[str, tuple] = field(default_factory=dict)
    install: str = ""
    package: str = ""
    check_precision: Callable[[str], None] | None = None
    ready_here: Callable[..., bool] | None = None
    ready_why: str = ""
    not_ready_why: str = ""
    auto_from_images: int | None = None
    first_use: str = ""

    def missing(self, precision: str = "fp32") -> list[str]:
        """Return the modules it needs (for ``precision``) that are not installed."""
        needed = tuple(self.modules) + tuple(self.precision_modules.get(precision, ()))
        return [m for m in needed if importlib.util.find_spec(m) is None]

    @property
    def available(self) -> bool:
        return not self.missing()

    @property
    def auto_candidate(self) -> bool:
        """Whether ``--runtime auto`` ever considers it."""
        return not self.reference and (self.ready_here is not None or self.auto_from_images is not None)


_RUNTIMES: dict[str, Runtime] = {}
_loaded = [False]


def register_runtime(runtime: Runtime, replace: bool = False) -> Runtime:
    """Add ``runtime``; returns it. A name is registered once: ``replace=True`` swaps an entry on purpose.

    Raises ConfigError for a name already registered (a plugin named ``tensorflow`` would
    otherwise become the reference and write its rows under TensorFlow's key), a second
    reference, or a reduced precision on a runtime that does not check itself (only a
    self-checking runtime can hold int8/bf16 to its own gate).
    """
    if runtime.name in _RUNTIMES and not replace:
        raise ConfigError(
            f"a runtime named {runtime.name!r} is registered already; choose another name "
            "(replace=True swaps it on purpose)."
        )
    if runtime.reference and any(r.reference and r.name != runtime.name for r in _RUNTIMES.values()):
        raise ConfigError(
            f"runtime {runtime.name!r} is declared the reference, but "
            f"{reference_runtime().name!r} already is; there is one reference runtime."
        )
    if set(runtime.precisions) - {"fp32"} and not runtime.checks_itself:
        raise ConfigError(
            f"runtime {runtime.name!r} declares precisions {runtime.precisions}, but only a "
            "runtime that checks itself (checks_itself=True) may compute other than fp32."
        )
    _RUNTIMES[runtime.name] = runtime
    return runtime


def unregister_runtime(name: str) -> None:
    """Remove the runtime ``name`` (nothing if it is not registered)."""
    _RUNTIMES.pop(name, None)


def _load_builtins() -> None:
    if not _loaded[0]:
        _loaded[0] = True
        for module in BUILTIN:
            importlib.import_module(module)
        load_plugins(RUNTIMES)  # then other distributions' runtimes (entry points), sorted by name


def runtime_names() -> tuple[str, ...]:
    """Return the registered runtimes' names, the reference first, then in registration order."""
    _load_builtins()
    return tuple(sorted(_RUNTIMES, key=lambda n: not _RUNTIMES[n].reference))


def list_runtimes() -> list[dict]:
    """Return one row per registered runtime: name, label, reference, precisions, available and, when
    not available, ``install`` (what to run) and ``missing`` (its modules that are not installed)."""
    rows = []
    for name in runtime_names():
        r = _RUNTIMES[name]
        rows.append(
            dict(
                name=name,
                label=r.label,
                reference=r.reference,
                precisions=tuple(r.precisions),
                available=r.available,
                **({} if r.available else dict(install=r.install, missing=r.missing())),
            )
        )
    return rows


def reference_runtime() -> Runtime:
    """Return the reference runtime (TensorFlow), the one every other runtime is checked against."""
    _load_builtins()
    return next(r for r in _RUNTIMES.values() if r.reference)


def get_registered(name: str) -> Runtime:
    """Return the registered runtime ``name`` as declared, whether or not it can run here (KeyError if none)."""
    _load_builtins()
    return _RUNTIMES[name]


def known_runtime(name, allow_auto: bool = True, what: str = "--runtime") -> str:
    """Return ``name`` when it is a registered runtime (or ``auto``); raises ConfigError with the allowed
    names and the closest one. Installation is not checked here (``get_runtime`` does)."""
    allowed = (("auto",) if allow_auto else ()) + runtime_names()
    if name not in allowed:
        raise choice_error(what, allowed, name)
    return name


def get_runtime(name: str, precision: str = "fp32") -> Runtime:
    """Return the runtime ``name``, ready to compute ``precision``.

    Raises ConfigError (before any work) for an unknown name (did you mean ...), a precision
    it does not compute (naming the runtimes that do), a precision this CPU cannot compute,
    and a missing package (naming it and the command that installs it).
    """
    runtime = _RUNTIMES.get(known_runtime(name, allow_auto=False))
    if precision not in runtime.precisions:
        able = [r for r in _RUNTIMES.values() if precision in r.precisions]
        raise ConfigError(
            f"--precision {precision} runs on {' or '.join(r.label for r in able) or 'no runtime'}: "
            f"add {' or '.join(f'--runtime {r.name}' for r in able)} (or leave --runtime auto). "
            f"Received: runtime={name!r}, precision={precision!r}."
        )
    if runtime.check_precision is not None:
        runtime.check_precision(precision)
    missing = runtime.missing(precision)
    if missing:
        what = f"--runtime {name}" + (f" --precision {precision}" if precision != "fp32" else "")
        raise ConfigError(
            f"{what} needs the {missing[0]} package, which is not installed. Install it with: "
            f"{runtime.install or f'pip install {missing[0]}'}  (or: pip install "
            f"{runtime.package or missing[0]}). Or use --runtime {reference_runtime().name}."
        )
    return runtime


def build_model(name: str, spec, context: BuildContext) -> FeatureModelLike:
    """Return the feature model of runtime ``name`` for ``spec``, built, checked and warmed up.

    A runtime other than the reference is checked against the reference before its first row.
    The reference computes any spec in fp32 (``predict`` and exports compute int8-trained
    models' features that way). Raises RuntimeMismatch when its features differ beyond the
    tolerance (nothing it computed is kept) and ConfigError when it cannot run here.
    """
    from bneck.features.runtimes.equivalence import RuntimeMismatch

    runtime = get_registered(known_runtime(name, allow_auto=False))
    runtime = get_runtime(name, "fp32" if runtime.reference else _precision(spec))
    model = runtime.build(spec, context)
    if not runtime.reference:
        if not runtime.checks_itself:
            model.equivalence = _check_against_reference(runtime, model, spec, context)
        elif not _passed(model.equivalence):  # a self-checking runtime must show its measured number
            raise RuntimeMismatch(
                f"runtime {name!r} made no passing check against "
                f"{reference_runtime().label} ({model.equivalence!r}); nothing was computed with it."
            )
    model.warm_up()
    return model


def _precision(spec) -> str:
    from bneck.features.runtimes.quantize import reduced_precision

    return reduced_precision(spec) or "fp32"


def _passed(check) -> bool:
    from bneck.features.runtimes.equivalence import CHECK_TOLERANCE

    number = check.get("max_rel_diff") if isinstance(check, dict) else None
    return isinstance(number, (int, float)) and not isinstance(number, bool) and number <= CHECK_TOLERANCE


def _check_against_reference(runtime: Runtime, model, spec, context: BuildContext) -> dict:
    """Compare ``model`` with the reference runtime on ``context.sample()``; returns the check (the
    forward passes it takes are not counted); raises RuntimeMismatch beyond the tolerance."""
    from bneck.features.runtimes import cpu
    from bneck.features.runtimes.equivalence import RuntimeMismatch, compare

    sample = context.sample() if context.sample is not None else None
    if sample is None or not len(sample):
        raise RuntimeMismatch(
            f"runtime {runtime.name!r} has to be checked against {reference_runtime().label} "
            "before its first row, and no images were given to check it on."
        )
    reference = reference_runtime().build(spec, context)
    calls, images = model.calls, model.images
    got = np.asarray(model(sample))
    model.calls, model.images = calls, images
    check = compare(got, reference(sample), runtime.name, cpu.signature())
    return dict(check, reference=reference_runtime().name)


def ready_here(name: str, spec, cache_dir: str) -> bool:
    """Whether runtime ``name`` (for ``auto``: any installed candidate) has its model for ``spec`` built
    and checked on this CPU already, so that it runs without building the reference network."""
    _load_builtins()
    runtimes = [r for r in _RUNTIMES.values() if r.auto_candidate] if name == "auto" else [_RUNTIMES[name]]
    return any(r.ready_here is not None and r.available and r.ready_here(spec, cache_dir) for r in runtimes)
