"""Stage 3: fine-tune the top of the base together with the trained head.

The images are exactly those the head's features were made from (its ``splits.json``),
checked by sha256 (``image_splits``). Both paths (``inputs``: the whole model per epoch,
or the unfrozen top on the cached frozen trunk) train with the same compiled loop
(``training.fastfit``), so for the same seed and no augmentation they give the same
losses. The best epoch by validation accuracy is kept (the frozen head's own score
is the first candidate), then scored on test. The folder is written like a stage-2
classifier: model, metrics, history, curves, splits and a typed manifest. A folder
fine-tuned from the same head (by its manifest's sha256), data and options is reused
(``reuse``), and a run that does fine-tune says why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np

from bneck.core.errors import BneckWarning
from bneck.core.folders import check_folder, staged_folder
from bneck.core.options import takes_options
from bneck.features import DatasetError, backbone_for, preprocess_for
from bneck.pipeline.artifacts import load_classifier, read_verified, verified_json
from bneck.pipeline.domain import write_domain
from bneck.pipeline.finetuning.inputs import (
    SplitImages,
    TrainInputs,
    cached_inputs,
    decode_split,
    plain_inputs,
    predictor,
)
from bneck.pipeline.finetuning.model import build_finetune_model
from bneck.pipeline.finetuning.options import (
    AUGMENTATIONS,
    FINETUNE,
    NO_AUGMENT,
    check_view_precision,
    fingerprint,
    fold_augment,
)
from bneck.pipeline.finetuning.outputs import (
    recorded_config,
    save_finetuned,
    validation_domain,
    write_image_splits,
    write_prediction_files,
)
from bneck.pipeline.finetuning.reuse import finetuned_reuse
from bneck.pipeline.image_splits import data_root_of, read_splits, recorded_images
from bneck.pipeline.metrics import class_probabilities, scores
from bneck.pipeline.training.fastfit import fast_fit

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """Where the fine-tuned model is, how it scored (metrics per split), and whether this call made it."""

    folder: str
    metrics: dict
    history: dict
    seconds: float
    config: dict | None = None  # the options it ran with
    reused: bool = False
    why: str = ""  # why it was fine-tuned (or "unchanged" when reused)


@takes_options(FINETUNE, fold=fold_augment)
def finetune(
    head_dir: str,
    data_dir: str | None,
    out_dir: str,
    *,
    unfreeze_from: str = "default",
    epochs: int = 12,
    lr: float = 3e-4,
    momentum: float = 0.9,
    optimizer: str = "adam",
    schedule: str = "cosine",
    warmup: float = 0.1,
    label_smoothing: float = 0.1,
    batch_size: int = 16,
    early_stopping: int = 0,
    seed: int = 0,
    rotation: float = 40.0,
    shift: float = 0.2,
    shear: float = 0.2,
    zoom: float = 0.2,
    flip: bool = True,
    cache_frozen: bool = True,
    views: int = 4,
    view_precision: str = "float32",
    tta: bool = False,
    cache_dir: str | None = None,
    weights: str | None = None,
    allow_untrained_head: bool = False,
    retrain: bool = False,
    augment: dict | None = None,
    verbose: bool = True,
) -> FinetuneResult:
    """Fine-tune the head in ``head_dir`` with its base on ``data_dir``; returns the result.

    The images are exactly those the head's features were made from (its ``splits.json``),
    found under ``data_dir`` (default: the recorded data root) and checked by sha256.
    The keyword options are ``finetuning.options.FINETUNE``'s, checked against it before any
    work (``takes_options``); ``augment`` may give the augmentation (rotation, shift, shear,
    zoom, flip) as one dict, whose settings replace those given one by one. With
    ``cache_frozen`` (the default), the output of the last frozen layer is computed once per
    image and view (``views`` per training image, view 0 un-augmented) into the feature
    cache, and only the unfrozen top trains, on those tensors. ``out_dir`` already
    fine-tuned from this head, data and options is reused unless ``retrain``. Raises
    HeadError, WeightsError, ConfigError or DatasetError (all BneckError).
    """
    arguments = locals()  # the checked options (``augment`` folded in by ``fold_augment``), in the table's order
    opts = {name: arguments[name] for name in FINETUNE.options}
    check_view_precision(opts)
    requested = fingerprint(opts)
    out_dir = check_folder(out_dir, "finetuned", inputs=[head_dir, data_dir])
    reused, why = _reused_or_why_not(head_dir, data_dir, out_dir, opts, requested)
    if reused is not None:
        return reused
    if verbose:
        log.info(f"fine-tuning ({why})")
    return _finetune(head_dir, data_dir, out_dir, opts, requested, why, verbose)


def _reused_or_why_not(
    head_dir, data_dir, out_dir: str, opts: dict, requested: dict
) -> tuple[FinetuneResult | None, str]:
    """Return (the result already in ``out_dir``, "") when it is current and --retrain was not given,
    else (None, why it must be fine-tuned)."""
    head_files = read_verified(head_dir)
    decision = finetuned_reuse(
        out_dir,
        head_files.manifest_sha256,
        data_root_of(read_splits(head_files.files, head_files.folder), data_dir),
        requested,
    )
    if decision.reused and not opts["retrain"]:
        # Reused only while the data still holds the recorded images, byte for byte (else DatasetError,
        # exactly as a new fine-tune would say): "the same data" means the same bytes, not the same folder.
        recorded_images(read_splits(head_files.files, head_files.folder), data_dir)
        return _reused(out_dir, opts), ""
    return None, "--retrain" if decision.reused else decision.why


def _finetune(head_dir, data_dir, out_dir, opts: dict, requested: dict, why: str, verbose: bool) -> FinetuneResult:
    from bneck.core.tfimport import import_tensorflow
    from bneck.features.cache.rows import resolve_cache_dir

    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(opts["seed"])  # before the head is loaded: its dropout seeds follow
    head, record, data_root, splits = _head_and_its_images(head_dir, data_dir, out_dir)
    opts = _without_an_impossible_cache(opts, head)
    seed, cache_frozen = opts["seed"], opts["cache_frozen"]
    augment = _augmentation(opts)
    # With --cache-frozen the cached views carry the augmentation.
    ft = build_finetune_model(
        head,
        opts["unfreeze_from"],
        NO_AUGMENT if cache_frozen else augment,
        seed,
        opts["allow_untrained_head"],
        opts["weights"],
    )
    cache_dir = resolve_cache_dir(opts["cache_dir"], inputs=[data_root, out_dir]) if cache_frozen else None
    with contextlib.ExitStack() as cleanup:
        inputs, data = _inputs(tf, ft, splits, augment, opts, cache_dir, cleanup, verbose)
        folder = cleanup.enter_context(staged_folder(out_dir, "finetuned", inputs=[head_dir, data_root]))
        history, metrics, probabilities = _train(
            tf, inputs, data, head.class_names, opts, backbone_for(ft.spec).xla, verbose
        )
        mirrored = _test_time_augmented(tf, inputs, data, probabilities, head.class_names, metrics)
        write_prediction_files(folder, head.class_names, data, probabilities, mirrored)
        write_image_splits(folder, record, data_root, data)
        if "validation" in splits:
            write_domain(folder, validation_domain(ft, splits["validation"], head.class_names))
        config = recorded_config(opts, ft.unfreeze_from, augment, inputs.views if cache_frozen else None)
        save_finetuned(folder, ft, head, history, metrics, config, data, data_root, requested)
    return FinetuneResult(out_dir, metrics, history, metrics["fit_seconds"], opts, reused=False, why=why)


def _without_an_impossible_cache(opts: dict, head) -> dict:
    """``opts`` with --cache-frozen off when the backbone's default unfreeze point has no single
    tensor below it to cache (NASNet's cells read the two before them), said in a BneckWarning."""
    if not opts["cache_frozen"] or opts["unfreeze_from"] not in (None, "default", "last-block"):
        return opts
    backbone = backbone_for(head.manifest.extractor_spec(opts["weights"]))
    if backbone.unfreeze_splits or backbone.measured_unfreeze_from:
        return opts
    warnings.warn(
        f"{backbone.label}'s layers above its unfreeze point {backbone.unfreeze_from} also read earlier "
        "tensors, so what is below cannot be cached: fine-tuning runs the whole network on every step "
        "(slower; --cache-frozen is off). --unfreeze-from none trains the head alone, with the cache.",
        BneckWarning,
        stacklevel=5,
    )  # the caller of finetune(), past _finetune and takes_options' wrapper
    return {**opts, "cache_frozen": False}


def _augmentation(opts: dict) -> dict:
    """Return the augmentation to apply: the options', or none when --cache-frozen keeps one view only
    (said in a BneckWarning at the caller of finetune())."""
    augment = {k: opts[k] for k in AUGMENTATIONS}
    if opts["cache_frozen"] and opts["views"] == 1 and any(augment.values()):
        # View 0 is the image itself: one view means no augmented image at all, so say so and record that.
        augment = dict(NO_AUGMENT)
        warnings.warn(
            "--views 1 keeps only each image itself, so no augmentation is applied; give --views K "
            "(K > 1) for K - 1 augmented views per image.",
            BneckWarning,
            stacklevel=5,
        )  # the caller of finetune(), past _finetune and takes_options' wrapper
    return augment


def _head_and_its_images(head_dir, data_dir, out_dir: str) -> tuple:
    """Load the head and find the images its features were made from; return (head, splits record,
    data root, images per split). Raises DatasetError without train and validation images."""
    head = load_classifier(head_dir)
    record = read_splits(head.files, head.folder)
    data_root, splits = recorded_images(record, data_dir)
    check_folder(out_dir, "finetuned", inputs=[head_dir, data_root])
    if "train" not in splits or "validation" not in splits:
        raise DatasetError(
            f"fine-tuning needs the train and validation splits, but the head in {head_dir} "
            f"was trained on features of {', '.join(splits)} only."
        )
    return head, record, data_root, splits


def _inputs(
    tf, ft, splits: dict, augment: dict, opts: dict, cache_dir: str | None, cleanup, verbose: bool
) -> tuple[TrainInputs, dict]:
    """Return (what the path trains on, the images per split). With ``cache_dir`` (--cache-frozen) the
    images are decoded only where the cache lacks rows, and the rows stream from files that
    ``cleanup`` removes; otherwise every image is decoded into memory."""
    from bneck.pipeline.finetuning.rowfile import RowFolder

    preprocess = preprocess_for(ft.spec)
    size = ft.spec.input_size
    if cache_dir is None:
        decoded = {split: decode_split(records, size) for split, records in splits.items()}
        return plain_inputs(tf, ft, decoded, preprocess, opts["tta"]), decoded
    data = {split: SplitImages(records, size) for split, records in splits.items()}
    views = opts["views"] if any(augment.values()) else 1  # without augmentation every view is the image
    rows = cleanup.enter_context(RowFolder(os.path.join(cache_dir, "tmp")))
    precision = opts["view_precision"]
    return cached_inputs(
        tf, ft, data, preprocess, augment, views, opts["seed"], cache_dir, rows, verbose, opts["tta"], precision
    ), data


def _train(
    tf, inputs: TrainInputs, data: dict, class_names: list, opts: dict, jit: bool, verbose: bool
) -> tuple[dict, dict, dict]:
    """Fine-tune ``inputs.model``, keeping the best epoch (or the start); returns (history, metrics,
    probabilities per split)."""
    from bneck.core.progress import progress_bar

    probabilities = {}
    predict = predictor(tf, inputs)

    def evaluate(split, final=False):
        if final and inputs.whole is not None and split != "train":  # cached path: the saved model on images
            out, mirror = inputs.whole(split, bool(inputs.mirrored) and split in inputs.mirrored)
            if mirror is not None:
                inputs.whole_mirrored[split] = mirror
        else:
            out = predict(inputs.x[split], len(data[split].labels))  # view 0 of each image
        probabilities[split] = class_probabilities(out)
        return scores(data[split].labels, probabilities[split], class_names)

    # The frozen-head starting point is the first candidate: an epoch is kept only if it
    # beats it, so a run that goes wrong (too high a learning rate) never returns a
    # model worse than the head it started from.
    before = evaluate("validation")
    bar = progress_bar(opts["epochs"], "fine-tune", verbose, unit="epoch")
    on_epoch, epoch_seconds = _epoch_timer(bar)
    start = time.perf_counter()
    try:
        history = _fit(inputs, data, opts, on_epoch, before["accuracy"], jit)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    metrics = {split: evaluate(split, final=True) for split in data}
    accs = history["val_accuracy"]
    metrics.update(
        fit_seconds=seconds,
        epoch_seconds=epoch_seconds,
        before_finetuning={"validation": {"loss": before["loss"], "accuracy": before["accuracy"]}},
        kept_epoch=int(np.argmax(accs)) + 1 if max(accs) > before["accuracy"] else 0,
    )
    if inputs.cache:
        metrics["cache_frozen"] = inputs.cache
    return history, metrics, probabilities


def _epoch_timer(bar) -> tuple:
    """Return (a per-epoch callback that times the epoch and shows its loss and validation accuracy
    on ``bar``, the list of epoch times it fills)."""
    epoch_seconds, tick = [], [time.perf_counter()]

    def on_epoch(logs):
        now = time.perf_counter()
        epoch_seconds.append(now - tick[0])
        tick[0] = now
        bar.set_postfix(loss=f"{logs['loss']:.3f}", val_acc=f"{logs['val_accuracy']:.3f}", refresh=False)
        bar.update(1)

    return on_epoch, epoch_seconds


def _fit(inputs: TrainInputs, data: dict, opts: dict, on_epoch, baseline: float, jit: bool) -> dict:
    """Run the compiled loop on ``inputs``, keeping the best epoch by validation accuracy over ``baseline``;
    returns the history."""
    return fast_fit(
        inputs.model,
        inputs.x["train"],
        data["train"].labels,
        inputs.x["validation"],
        data["validation"].labels,
        epochs=opts["epochs"],
        batch_size=opts["batch_size"],
        optimizer=opts["optimizer"],
        lr=opts["lr"],
        momentum=opts["momentum"],
        seed=opts["seed"],
        schedule=opts["schedule"],
        warmup=opts["warmup"],
        label_smoothing=opts["label_smoothing"],
        on_epoch=on_epoch,
        prepare=inputs.prepare,
        views=inputs.views,
        monitor="val_accuracy",
        patience=opts["early_stopping"],
        keep_best=True,
        baseline=baseline,
        eval_batch=inputs.eval_batch,
        jit=jit,
        augment=inputs.augment,
    )


def _test_time_augmented(
    tf, inputs: TrainInputs, data: dict, probabilities: dict, class_names: list, metrics: dict
) -> dict:
    """With test-time augmentation, score the mean of each image's and its mirror's probabilities
    on validation and test into ``metrics["tta"]``; returns those probabilities per split."""
    if not inputs.mirrored:
        return {}
    predict = predictor(tf, inputs)

    def mirror(split, x) -> np.ndarray:  # scored on the images when the rows are bfloat16
        scored = inputs.whole_mirrored.get(split)
        return predict(x) if scored is None else scored

    mean = {s: (probabilities[s] + class_probabilities(mirror(s, x))) / 2.0 for s, x in inputs.mirrored.items()}
    metrics["tta"] = {s: scores(data[s].labels, p, class_names) for s, p in mean.items()}
    return mean


def _reused(folder: str, opts: dict) -> FinetuneResult:
    """The result of a current fine-tuned folder, from its verified files."""
    from bneck.pipeline.artifacts import read_history

    verified = read_verified(folder)
    metrics = verified_json(verified, "metrics.json")
    return FinetuneResult(
        verified.folder,
        metrics,
        read_history(verified.files["history.csv"]),
        metrics.get("fit_seconds", 0.0),
        opts,
        reused=True,
        why="unchanged",
    )
