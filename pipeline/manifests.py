"""What a model folder's ``manifest.json`` says, typed: one dataclass per kind, written and read here.

A manifest carries everything a consumer needs to rebuild and check the model without
asking the user again (as nanoGPT rebuilds its model from ``checkpoint['model_args']``):
the resolved options it was trained with, the class names, the extractor (key and full
spec, so the base can be rebuilt and its weights found by sha256), where its inputs
came from, its scores, and the sha256 of every other file of the folder.

Reading is strict: the JSON must hold exactly the fields of its kind, each of its
type, or the folder is refused (``ManifestError``) before anything in it is used.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Union

from bneck.core.errors import BneckError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2
MODEL_FILES = {"keras": "model.keras", "finetuned": "model.keras", "sklearn": "model.skops"}
ENSEMBLE_MODEL = "manifest.json"  # an ensemble's model is its members and their weights, in its manifest


class ArtifactError(BneckError):
    """A model folder is missing, incomplete, does not match its manifest, or holds code."""


class ManifestError(ArtifactError):
    """A manifest is not one bneck writes: a field missing, unknown, or of the wrong type."""


@dataclass(frozen=True)
class FeatureFileRef:
    """A feature file a classifier was trained or scored on, pinned by content."""

    path: str
    sha256: str


@dataclass(frozen=True)
class HeadRef:
    """The stage-2 head a fine-tuned model started from, pinned by its manifest's sha256."""

    folder: str
    classifier: str
    manifest_sha256: str


@dataclass(kw_only=True)
class ModelManifest:
    """What every model folder's manifest holds."""

    kind: str
    classifier: str
    model_file: str
    config: dict  # the resolved options it was made with
    class_names: list[str]
    extractor_key: str
    extractor: dict  # the extractor's key fields (``ExtractorSpec.describe()``)
    weights_path: str  # where the backbone weights were read from: a hint; they are found by sha256
    metrics: dict  # split -> accuracy, loss (and macro F1 for classifiers)
    converted_from: dict | None = None  # set by `bneck convert`
    # Written by ``write_manifest`` when the folder is complete:
    manifest_version: int = MANIFEST_VERSION
    versions: dict = field(default_factory=dict)
    created_utc: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> sha256

    def extractor_spec(self, weights: str | None = None, need_weights: bool = True):
        """Return the ExtractorSpec the model's inputs come from, its weights found by sha256
        (``weights``: a path to try instead; none looked for without ``need_weights``, for a network
        saved whole). Raises WeightsError when none matches."""
        from bneck.features.backbones.resolve import spec_from_record

        where = "the model folder's manifest"
        return spec_from_record(self.extractor, self.extractor_key, [self.weights_path], weights, where, need_weights)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(kw_only=True)
class ClassifierManifest(ModelManifest):
    """A stage-2 classifier: a Keras head (kind 'keras') or a scikit-learn model (kind 'sklearn')."""

    streamed: bool  # trained on blocks read from disk (--max-memory)
    feature_shape: list[int]
    feature_files: dict[str, FeatureFileRef]  # split -> the file it was trained or scored on
    head_weights_file: str | None = None  # Keras heads
    epochs_run: int | None = None  # Keras heads
    trained: bool = False  # Keras heads: fitted (stage 3 refuses an untrained head)
    search: dict = field(default_factory=dict)  # scikit-learn with --search: the grid's choice


@dataclass(kw_only=True)
class FinetunedManifest(ModelManifest):
    """A stage-3 model: base and head in one Keras model, fed preprocessed images."""

    head: HeadRef
    data: str  # the data root its images were read from
    requested: dict  # the options that decide the model (``finetuning.options.fingerprint``)
    input: str
    trainable_layers: list[str]
    frozen_layers: int
    images: dict[str, int]
    skipped_images: dict[str, list]


@dataclass(frozen=True)
class MemberRef:
    """A member of an ensemble: its folder (relative to the ensemble's), pinned by its manifest's sha256."""

    name: str
    folder: str
    kind: str
    classifier: str
    manifest_sha256: str
    weight: int


@dataclass(frozen=True)
class CandidateRef:
    """A model selection could choose, pinned by its manifest's sha256, with its own validation scores."""

    name: str
    manifest_sha256: str
    validation_accuracy: float
    validation_loss: float


@dataclass(frozen=True)
class RoundRef:
    """One round of greedy selection: the model added and the ensemble's validation scores after it."""

    added: str
    validation_accuracy: float
    validation_loss: float


@dataclass(kw_only=True)
class EnsembleManifest(ModelManifest):
    """A weighted ensemble of model folders of one extractor and the same images (``bneck ensemble``)."""

    members: list[MemberRef]
    candidates: list[CandidateRef]
    rounds: list[RoundRef]
    kept_round: int  # the ensemble is the first kept_round rounds
    made_in: str  # where the ensemble was written: its members' paths are relative to it (a hint, never read)


KINDS: dict[str, type] = {
    "keras": ClassifierManifest,
    "sklearn": ClassifierManifest,
    "finetuned": FinetunedManifest,
    "ensemble": EnsembleManifest,
}
AnyManifest = ClassifierManifest | FinetunedManifest | EnsembleManifest
MEMBER_KINDS = ("keras", "sklearn", "finetuned")  # an ensemble is never a member: no nesting, no cycle


def parse_manifest(raw, where: str) -> AnyManifest:
    """Return the typed manifest of ``raw`` (the parsed JSON). Raises ManifestError naming the field."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where} is not a manifest: it holds {type(raw).__name__}, not a table.")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ManifestError(f"{where} names kind {kind!r}; bneck's model folders are {', '.join(map(repr, KINDS))}.")
    manifest = _build(KINDS[kind], raw, where)
    names = manifest.class_names
    if len(names) < 2 or len(set(names)) != len(names) or not all(names):
        raise ManifestError(
            f"{where}: field 'class_names' must name two or more different classes. Received: {names!r:.120}."
        )
    if isinstance(manifest, ClassifierManifest) and not all(d > 0 for d in manifest.feature_shape):
        raise ManifestError(
            f"{where}: field 'feature_shape' must hold positive sizes. Received: {manifest.feature_shape!r:.120}."
        )
    if isinstance(manifest, EnsembleManifest):
        _check_ensemble(manifest, where)
    _check_extractor(manifest, where)
    return manifest


def _described(members: list[MemberRef]) -> str:
    return f"{[(m.name, m.kind, m.weight) for m in members]!r:.200}"


MAX_ROUNDS = 1000  # the largest --max-size: no ensemble bneck writes has more rounds, or members


def _check_ensemble(manifest: EnsembleManifest, where: str) -> None:
    """Members: one or more distinct folders (by name, path and manifest sha256), of a kind that is not an
    ensemble, each weighted 1 or more; the weights add up to the rounds kept, the kept round is one of at
    most MAX_ROUNDS rounds; names and paths printable; the settings those bneck writes."""
    members = manifest.members
    config = manifest.config
    problem = (
        "it lists no member"
        if not members
        else f"it has more than {MAX_ROUNDS} rounds or candidates"
        if max(len(manifest.rounds), len(manifest.candidates)) > MAX_ROUNDS
        else "a member is listed twice (by name, folder or manifest sha256)"
        if any(len({getattr(m, f) for m in members}) != len(members) for f in ("name", "folder", "manifest_sha256"))
        else "a name or folder holds characters that are not printable"
        if not all(m.name.isprintable() and m.folder.isprintable() for m in members)
        or not manifest.made_in.isprintable()
        else "a member is not a classifier or a fine-tuned model"
        if any(m.kind not in MEMBER_KINDS for m in members)
        else "a member's weight is not a positive integer"
        if any(m.weight < 1 for m in members)
        else "its kept round is not one of its rounds"
        if not 1 <= manifest.kept_round <= len(manifest.rounds)
        else "its weights do not add up to the rounds kept"
        if sum(m.weight for m in members) != manifest.kept_round
        else f"its model_file is {manifest.model_file!r}, not {ENSEMBLE_MODEL!r}"
        if manifest.model_file != ENSEMBLE_MODEL
        else "its config is not the settings bneck records (max_size, criterion)"
        if set(config) != {"max_size", "criterion"}
        or not isinstance(config["max_size"], int)
        or isinstance(config["max_size"], bool)
        or not 1 <= config["max_size"] <= MAX_ROUNDS
        or not isinstance(config["criterion"], str)
        else ""
    )
    if problem:
        raise ManifestError(
            f"{where}: {problem}. bneck writes ensembles of distinct members (keras, sklearn or finetuned "
            f"folders) with integer weights of 1 or more, so the folder is refused. Make it again with "
            f"`bneck ensemble MODEL_DIR... --out DIR`. Received members: {_described(members)}."
        )


def _check_extractor(manifest, where: str) -> None:
    """The recorded extractor must be one bneck writes, and its key fields must hash to the recorded key
    (so no field can be dropped or changed without the key saying so)."""
    from bneck.core.errors import BneckError
    from bneck.features.backbones.resolve import check_record
    from bneck.features.backbones.spec import KEY_FIELDS, OPTIONAL_KEY_FIELDS, extractor_key

    try:
        check_record(manifest.extractor, where)
    except BneckError as exc:
        raise ManifestError(str(exc)) from None
    missing = [f for f in KEY_FIELDS if f not in manifest.extractor and f not in OPTIONAL_KEY_FIELDS + ("alpha",)]
    if missing or extractor_key(manifest.extractor) != manifest.extractor_key:
        raise ManifestError(
            f"{where}: its extractor record does not hash to its extractor_key "
            f"({'missing ' + ', '.join(missing) if missing else 'a field was changed'}); "
            "bneck writes both from one extractor, so the folder is refused. Train the model "
            "again from features you extracted yourself."
        )


def _build(cls: type, raw: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ManifestError(
            f"{where} holds field(s) {', '.join(map(repr, unknown[:5]))} that a {cls.__name__} "
            "never has; bneck writes no such manifest, so the folder is refused."
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ManifestError(f"{where} lacks the field {name!r} that every {cls.__name__} has.")
            continue
        values[name] = _value(hints[name], raw[name], f"{where}: field {name!r}")
    return cls(**values)


def _value(hint, value, where: str):
    """Return ``value`` checked against the type ``hint`` (nested dataclasses built)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):  # Optional[X] and X | None alike
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ManifestError(f"{where} must be a table. Received: {value!r:.80}.")
        return _build(hint, value, where)
    base = origin or hint
    ok = isinstance(value, base) and not (base in (int, float) and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ManifestError(
            f"{where} must be {getattr(base, '__name__', base)}. Received: {value!r:.80} ({type(value).__name__})."
        )
    if base is list and args:
        return [_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if base is dict and args:
        return {_value(args[0], k, f"{where} key"): _value(args[1], v, f"{where}[{k!r}]") for k, v in value.items()}
    return value
