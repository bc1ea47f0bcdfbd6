"""Using a trained classifier: re-score it on a feature file, or classify new images.

``predict`` never asks for the extractor again: backbone, weights (checked by
sha256), input size, preprocessing, layer and pool all come from the manifest
(``ModelManifest.extractor_spec``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bneck.features import FeatureFileError, preprocess_for, read_features
from bneck.features.images.dataset import IMAGE_EXTENSIONS, is_image_name, is_visible
from bneck.pipeline.artifacts import LoadedClassifier, load_classifier
from bneck.pipeline.domain import DOMAIN_FILE, UNCALIBRATED, Domain, pooled, read_domain, uncalibrated
from bneck.pipeline.image_splits import read_splits, seen_in
from bneck.pipeline.metrics import class_probabilities, scores


def classifier_proba(clf: LoadedClassifier, x: np.ndarray) -> np.ndarray:
    """Return (N, C) probabilities of a loaded classifier (or ensemble of them) on features ``x``."""
    if clf.kind == "ensemble":
        return clf.model.mean([classifier_proba(member, x) for _, member, _ in clf.model.members])
    if clf.kind == "keras":
        from bneck.pipeline.training.heads import proba

        return proba(clf.model, np.asarray(x, dtype=np.float32))
    return clf.model.predict_proba(x)


def evaluate(model_dir: str, feature_file: str) -> dict:
    """Score a saved classifier on any split file; returns the metrics dict.

    Raises ArtifactError for a tampered classifier and FeatureFileError when the
    file comes from another extractor or class list.
    """
    clf = load_classifier(model_dir)
    if clf.kind == "finetuned" or (clf.kind == "ensemble" and not clf.model.takes_features):
        what = "a fine-tuned model" if clf.kind == "finetuned" else "an ensemble with a fine-tuned member"
        raise FeatureFileError(
            f"{model_dir} is {what}: it takes images, not feature "
            "files. Use `bneck predict MODEL_DIR IMAGES...`, or read its "
            "metrics.json for the validation and test scores."
        )
    f = read_features(feature_file)
    if f.extractor_key != clf.manifest.extractor_key:
        theirs, ours = f.attrs["extractor"], clf.manifest.extractor
        diff = "; ".join(f"{k}: {theirs.get(k)!r} vs {ours.get(k)!r}" for k in ours if theirs.get(k) != ours.get(k))
        raise FeatureFileError(
            f"{feature_file} was made by another extractor than the one "
            f"{model_dir} was trained on ({diff}). Extract it with the "
            "classifier's settings (see its manifest.json)."
        )
    if f.class_names != clf.class_names:
        raise FeatureFileError(
            f"{feature_file} has classes {f.class_names}, but {model_dir} was trained on {clf.class_names}."
        )
    trained_on = set(read_splits(clf.files, clf.folder)["splits"].get("train", {}).get("sha256", []))
    metrics = scores(f.labels, classifier_proba(clf, f.features), clf.class_names)
    metrics["training_images"] = sum(sha in trained_on for sha in f.sha256)  # not held out when > 0
    return metrics


def _expand(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    if isinstance(inputs, (str, os.PathLike)):  # one path, not a sequence of one-letter paths
        inputs = [os.fspath(inputs)]
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        if os.path.isdir(item):
            before = len(out)
            for current, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if is_visible(d))
                for name in sorted(files):
                    if is_image_name(name):
                        out.append((os.path.join(current, name), None))
            if len(out) == before:  # never "0 of 0 classified" with exit 0
                out.append((item, f"a folder holding no images (extensions: {', '.join(IMAGE_EXTENSIONS)})"))
        elif os.path.lexists(item):  # a file; decoding says if it is not a regular image file
            out.append((item, None))
        else:
            out.append((item, "no such file or folder"))
    return out


def choose_runtime(clf: LoadedClassifier, spec, runtime: str, cache_dir: str | None = None) -> tuple[str, str]:
    """Return (the runtime that computes the features, why). ``auto`` is extract's own choice
    (``runtimes.choice``) for a few images: another runtime only when it costs nothing to trust (its model
    of this extractor is cached and was checked against TensorFlow by this user on this CPU class; a
    handful of images never pays for a conversion); else TensorFlow. Raises ConfigError for an unknown
    runtime (with the closest name)."""
    from bneck.features.cache.rows import check_cache_dir, default_cache_dir
    from bneck.features.runtimes.choice import choose_runtime as choose
    from bneck.features.runtimes.registry import known_runtime, reference_runtime

    known_runtime(runtime)
    reference = reference_runtime().name
    if clf.kind == "finetuned" or (clf.kind == "ensemble" and not clf.model.needs_base):
        return reference, "a fine-tuned model is one Keras graph" + (" (each member)" if clf.kind == "ensemble" else "")
    if spec.quantization is not None:
        from bneck.features.runtimes.quantize import reduced_precision

        return reference, (
            f"{reduced_precision(spec)} features are made only by `bneck extract`; here the fp32 "
            "network computes them (what an export holds too)"
        )
    cache = check_cache_dir(
        cache_dir or default_cache_dir()
    )  # its converted models: a cache others could write is refused
    chosen, why = choose(runtime, spec=spec, cache_dir=cache, converts=False)
    return chosen, why.removeprefix("auto: ")


def probability_function(
    clf: LoadedClassifier, spec, runtime: str = "tensorflow", cache_dir: str | None = None, sample=None
):
    """Return ``run(uint8 images (N, S, S, 3)) -> (N, C) probabilities``. With TensorFlow it is bneck's
    reference path, the one every export is compared with; another runtime (features only) is built by
    the registry and checked against TensorFlow first on ``sample()`` images if it never was here.
    Raises ConfigError for a runtime that cannot run here, RuntimeMismatch for one whose numbers differ."""
    scored = scored_function(clf, spec, runtime, cache_dir, sample)
    return lambda batch: scored(batch)[0]


def scored_function(
    clf: LoadedClassifier, spec, runtime: str = "tensorflow", cache_dir: str | None = None, sample=None
):
    """Return ``run(images) -> (probabilities, pooled vectors of the model whose domain is checked)``:
    a classifier's features, a fine-tuned base's output, an ensemble's member ``model_domain`` names."""
    if clf.kind == "finetuned":  # base and head in one model, fed preprocessed images
        from bneck.core.tfimport import import_tensorflow

        tf, preprocess = import_tensorflow(), preprocess_for(spec)
        base, head = clf.model.layers[1], clf.model.layers[2]  # bneck's own graph: image -> base -> head

        @tf.function(reduce_retracing=True)  # traced once, whatever the batch sizes
        def both(x):
            maps = base(x, training=False)
            return maps, head(maps, training=False)

        def finetuned(batch):
            maps, out = both(tf.constant(preprocess(batch.astype(np.float32))))
            return class_probabilities(out.numpy()), pooled(maps.numpy())

        return finetuned
    from bneck.features.cache.rows import default_cache_dir
    from bneck.features.runtimes.registry import BuildContext, build_model

    model = (
        build_model(runtime, spec, BuildContext(cache_dir or default_cache_dir(), sample=sample))
        if clf.needs_base
        else None
    )
    if clf.kind != "ensemble":
        assert model is not None  # a classifier takes features

        def classifier(batch):
            features = model(batch)
            return classifier_proba(clf, features), pooled(features)

        return classifier
    members = clf.model.members
    images = [scored_function(m, spec) if m.kind == "finetuned" else None for _, m, _ in members]
    _, checked = model_domain(clf)

    def run(batch):  # the features computed once for every member that takes them
        features = model(batch) if model is not None else None
        outputs = [
            (classifier_proba(m, features), features) if f is None else f(batch)
            for (_, m, _), f in zip(members, images)
        ]
        vectors = None if checked is None else outputs[checked][1]
        if checked is not None and images[checked] is None:
            vectors = pooled(vectors)
        return clf.model.mean([p for p, _ in outputs]), vectors

    return run


def model_domain(clf: LoadedClassifier) -> tuple[Domain | None, int | None]:
    """The domain images are checked against (None for a folder made before bneck recorded one) and, for an
    ensemble, the index of the member it is the domain of: the heaviest member that has one."""
    if clf.kind != "ensemble":
        return _domain_of(clf), None
    members = clf.model.members
    for i in sorted(range(len(members)), key=lambda i: (-members[i][2], i)):
        domain = _domain_of(members[i][1])
        if domain is not None:
            return domain, i
    return None, None


def _domain_of(clf: LoadedClassifier) -> Domain | None:
    from bneck.pipeline.manifests import ArtifactError

    try:
        domain = read_domain(clf.files)
        if domain is not None and len(domain.centroids) > len(clf.class_names):
            raise ValueError(f"{len(domain.centroids)} centroids for {len(clf.class_names)} classes")
        return domain
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise ArtifactError(
            f"{clf.folder}/{DOMAIN_FILE} cannot be read as bneck's domain record ({str(exc)[:200]})."
        ) from None


def predict_images(
    model_dir: str, inputs: Sequence[str], weights: str | None = None, batch_size: int = 32, runtime: str = "auto"
) -> list[dict]:
    """Classify images (files or folders); returns one dict per file (see ``classify``)."""
    return classify(model_dir, inputs, weights, batch_size, runtime)[1]


def _max_batch() -> int:
    """The largest --batch-size: extract's own bound."""
    from bneck.features.extraction.options import EXTRACT

    high = EXTRACT["batch_size"].high
    assert high is not None  # the table bounds batch_size
    return int(high)


def classify(
    model_dir: str,
    inputs: Sequence[str],
    weights: str | None = None,
    batch_size: int = 32,
    runtime: str = "auto",
    info: dict | None = None,
) -> tuple[list[str], list[dict]]:
    """Classify images (files or folders); returns (the model's class names, one dict per file).

    Each dict has ``path`` and either ``class``, ``probabilities``, ``seen_in`` (the
    split of the model's own images it is one of, by sha256, else None), ``out_of_domain``
    (whether the image is unlike the model's validation images, ``pipeline.domain``; None
    for a folder made before bneck recorded its domain) and ``domain_distance``, or ``error``:
    a bad or missing image is reported in its row, never fatal for the others.
    ``info`` (a dict, if given) receives the runtime that ran and why.
    """
    from bneck.core.hashing import sha256_files
    from bneck.features.images.batches import decoded_batches
    from bneck.features.runtimes.registry import known_runtime, reference_runtime

    known_runtime(runtime)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= _max_batch():
        from bneck.core.errors import ConfigError

        raise ConfigError(
            f"--batch-size must be an integer from 1 to {_max_batch()} (images classified at once). "
            f"Received: {batch_size!r}."
        )
    clf = load_classifier(model_dir)
    spec = clf.manifest.extractor_spec(weights, need_weights=clf.needs_base)  # a fine-tuned network is saved whole
    seen = seen_in(read_splits(clf.files, clf.folder))
    items = _expand(inputs)
    rows: dict[str, dict[str, Any]] = {path: {"path": path, "error": err} for path, err in items if err}
    todo = [(path, path) for path, err in items if not err]
    shas = dict(zip([p for p, _ in todo], (sha for sha, _ in sha256_files([p for p, _ in todo]))))
    if todo:
        chosen, why = choose_runtime(clf, spec, runtime)
        if info is not None:
            info.update(runtime=chosen, why=why)
        sample = (lambda: _sample(todo, spec.input_size)) if chosen != reference_runtime().name else None
        run = scored_function(clf, spec, chosen, sample=sample)
        domain, _ = model_domain(clf)
        for paths, batch, failures in decoded_batches(todo, spec.input_size, batch_size):
            for path, reason in failures:
                rows[path] = {"path": path, "error": reason}
            if paths:
                probs, vectors = run(batch)
                for path, row in zip(paths, _rows(clf.class_names, probs, vectors, domain)):
                    rows[path] = {"path": path, **row, "seen_in": seen.get(shas.get(path) or "")}
        if info is not None:
            info["domain"] = _domain_said(domain, uncalibrated(clf.files))
    return list(clf.class_names), [rows[path] for path, _ in items]


def _rows(class_names: list[str], probs: np.ndarray, vectors, domain: Domain | None) -> list[dict]:
    """Each image's class, probabilities and domain verdict (None: the folder records no domain)."""
    if domain is not None and domain.centroids.shape[1] != np.shape(vectors)[1]:
        from bneck.pipeline.manifests import ArtifactError

        raise ArtifactError(
            f"the domain record holds centroids of {domain.centroids.shape[1]} features, but the model's features "
            f"have {np.shape(vectors)[1]}: it is not the record of this model. Train the model again."
        )
    distance = domain.scores(vectors) if domain is not None else [None] * len(probs)
    limit = domain.threshold if domain is not None else 0.0
    return [
        {
            "class": class_names[int(np.argmax(p))],
            "probabilities": dict(zip(class_names, map(float, p))),
            "out_of_domain": None if d is None else bool(d > limit),
            "domain_distance": None if d is None else round(float(d), 4),
        }
        for p, d in zip(probs, distance)
    ]


def _domain_said(domain: Domain | None, could_not_calibrate: bool = False) -> str:
    if domain is None and could_not_calibrate:
        return f"not checked: {UNCALIBRATED} (add validation images and train again to get one)"
    if domain is None:
        return "not checked: this folder records no domain (made by an older bneck; train it again to get one)"
    n = domain.validation_images
    expected = max(1 - domain.quantile, 1 / (n + 1))  # with few images the quantile is their largest distance
    return (
        f"an image is out of domain above distance {domain.threshold:.3f} (the {domain.quantile:.0%} quantile "
        f"of its {n} validation images: expect about {expected:.0%} of images like them flagged"
        + ("; more validation images make that closer to 1 %)" if expected > 0.015 else ")")
    )


def _sample(todo, size: int, count: int = 8) -> np.ndarray:
    """Up to ``count`` of the images to classify, decoded: what a runtime not checked here is checked on."""
    from bneck.features.images.decode import UnusableImage, decode_image

    images = []
    for path, _ in todo:
        try:
            images.append(decode_image(path, size))
        except UnusableImage:
            continue
        if len(images) == count:
            break
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
