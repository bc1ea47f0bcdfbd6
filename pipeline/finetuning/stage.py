"""Stage 3: fine-tune the top of the base together with the trained head.

Images are decoded once (Pillow bilinear, exactly as in stage 1) into memory. The
plain path feeds them per epoch through the backbone's own preprocessing, the
augmentation (training batches only) and the whole model. The fast path
(``cache_frozen``) runs the frozen part once per image and view into the feature
cache (``features.view_rows``) and trains only the unfrozen top on those tensors. Both
train with the same compiled loop (``fastfit``), so for the same seed and no
augmentation they give the same losses. The best epoch by validation accuracy is
kept, then scored on test. The folder is written like a stage-2 classifier: model,
metrics, history, curves and a manifest hashing every file.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from features import DatasetError, get_backbone
from features.batches import decoded_batches
from features.outputs import check_folder

from ..artifacts import (load_classifier, staged_folder, write_history, write_json, write_manifest,
                        write_predictions)
from ..training.fastfit import fast_fit
from .model import NO_AUGMENT, augmentation_params, build_finetune_model
from .options import AUGMENTATIONS, FINETUNE, fingerprint
from ..image_splits import read_splits, recorded_images, write_splits
from ..metrics import class_probabilities, scores

@dataclass
class FinetuneResult:
    """Where the fine-tuned model is and how it scored (metrics per split)."""

    folder: str
    metrics: dict
    history: dict
    seconds: float
    config: dict = None  # the options it ran with


def _decode_split(records, size: int) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Return (uint8 images, labels, [(path, reason)] skipped, (record, sha) kept) for a split.

    ``records`` are (ImageRecord, sha256) pairs. Decoded once, the whole split held in
    memory (2,000 images at 224 px: 300 MB).
    """
    images = np.empty((len(records), size, size, 3), np.uint8)
    skipped, n, kept = [], 0, []
    by_path = {r.path: (r, sha) for r, sha in records}
    for paths, batch, failures in decoded_batches([(r.path, r.abspath) for r, _ in records], size, 64):
        skipped.extend(failures)
        images[n:n + len(paths)] = batch
        kept.extend(by_path[p] for p in paths)
        n += len(paths)
    return images[:n], np.asarray([r.label for r, _ in kept], np.int64), skipped, kept


def _predictor(tf, model, prepare, batch_size: int):
    """Return x -> the model's outputs, batch by batch (bounded activations), traced once."""
    call = tf.function(lambda b: model(prepare(b), training=False), reduce_retracing=True)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([call(tf.constant(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)])
    return predict


@dataclass
class _Inputs:
    """What one path trains on: a model and per-split inputs it takes, and how to prepare them."""

    model: object
    x: dict          # split -> rows (train: views * n rows, view-major)
    prepare: object  # in-graph batch -> model input
    views: int
    eval_batch: int
    augment: object = None  # training batches only
    cache: Optional[dict] = None  # trunk rows computed / reused, seconds


def _plain_inputs(tf, ft, data, preprocess) -> _Inputs:
    augment = None
    if ft.augmentation is not None:
        def augment(batch):
            return ft.augmentation(batch, training=True)
    return _Inputs(ft.model, {s: d[0] for s, d in data.items()},
                   lambda b: preprocess(tf.cast(b, tf.float32)), 1, 32, augment)


def _cached_inputs(tf, ft, data, records, preprocess, augment, views, seed, cache_dir, verbose) -> _Inputs:
    from features.view_rows import TrunkViews

    from .model import frozen_split

    split = frozen_split(ft)
    trunk = TrunkViews(split.trunk, preprocess, ft.spec, split.layer, split.pool, augment, seed,
                       cache_dir, verbose=verbose)
    x = {s: trunk.rows(d[0], [sha for _, sha in records[s]], range(views) if s == "train" else [0], s)
         for s, d in data.items()}
    stats = trunk.stats
    return _Inputs(split.top, x, lambda b: tf.cast(b, tf.float32), views, 256,
                   cache={"layer": split.layer, "views": views, "rows_computed": stats.computed,
                          "rows_reused": stats.reused, "seconds": stats.seconds})


def finetune(head_dir: str, data_dir: Optional[str], out_dir: str, *, augment: Optional[dict] = None,
             verbose: bool = True, **options) -> FinetuneResult:
    """Fine-tune the head in ``head_dir`` with its base on ``data_dir``; returns the result.

    The images are exactly those the head's features were made from (its ``splits.json``),
    found under ``data_dir`` (default: the recorded data root) and checked by sha256.
    ``options`` are ``finetune_options.FINETUNE``'s (unfreeze_from, epochs, lr, momentum,
    optimizer, batch_size, early_stopping, seed, the augmentation, cache_frozen, views,
    cache_dir, weights, allow_untrained_head); ``augment`` may give the augmentation as
    one dict. With ``cache_frozen`` (the default), the output of the last frozen layer
    is computed once per image and view (``views`` per training image, view 0
    un-augmented) into the feature cache, and only the unfrozen top trains, on those
    tensors. Raises HeadError, WeightsError, ConfigError or DatasetError (all BneckError).
    """
    from features.cache import resolve_cache_dir
    from features.progress import progress_bar
    from features.tfimport import import_tensorflow

    opts = FINETUNE.check({**options, **augmentation_params(augment or {}, defaults=False)})
    (unfreeze_from, epochs, lr, momentum, optimizer, batch_size, early_stopping, seed, cache_frozen, views,
     cache_dir, weights, allow_untrained_head) = (opts[k] for k in (
        "unfreeze_from", "epochs", "lr", "momentum", "optimizer", "batch_size", "early_stopping", "seed",
        "cache_frozen", "views", "cache_dir", "weights", "allow_untrained_head"))
    augment = {k: opts[k] for k in AUGMENTATIONS}
    requested = fingerprint(opts)
    tf = import_tensorflow()
    import keras

    out_dir = check_folder(out_dir, "finetuned", inputs=[head_dir, data_dir])
    keras.utils.set_random_seed(seed)  # before the head is loaded: its dropout seeds follow
    head = load_classifier(head_dir)
    record = read_splits(head.files, head.folder)
    data_root, splits = recorded_images(record, data_dir)
    check_folder(out_dir, "finetuned", inputs=[head_dir, data_root])
    if "train" not in splits or "validation" not in splits:
        raise DatasetError(f"fine-tuning needs the train and validation splits, but the head in {head_dir} "
                           f"was trained on features of {', '.join(splits)} only.")
    # With --cache-frozen the cached views carry the augmentation.
    ft = build_finetune_model(head, unfreeze_from, NO_AUGMENT if cache_frozen else augment, seed,
                              allow_untrained_head, weights)
    if cache_frozen and not any(augment.values()):
        views = 1  # every view would be the image itself
    preprocess = get_backbone(ft.spec.backbone).preprocess_fn()
    data, kept = {}, {}
    for split, records in splits.items():
        images, labels, skipped, kept[split] = _decode_split(records, ft.spec.input_size)
        data[split] = (images, labels, skipped)
    if cache_frozen:
        cache_dir = resolve_cache_dir(cache_dir, inputs=[data_root, out_dir])
        inputs = _cached_inputs(tf, ft, data, kept, preprocess, augment, views, seed, cache_dir, verbose)
    else:
        inputs = _plain_inputs(tf, ft, data, preprocess)
    with staged_folder(out_dir, "finetuned", inputs=[head_dir, data_root]) as folder:
        probabilities = {}
        predict = _predictor(tf, inputs.model, inputs.prepare, inputs.eval_batch)

        def evaluate(split):
            out = predict(inputs.x[split][:len(data[split][1])])
            probabilities[split] = class_probabilities(out)
            return scores(data[split][1], probabilities[split], head.class_names)

        # The frozen-head starting point is the first candidate: an epoch is kept only if it
        # beats it, so a run that goes wrong (too high a learning rate) never returns a
        # model worse than the head it started from.
        before = evaluate("validation")
        bar = progress_bar(epochs, "fine-tune", verbose, unit="epoch")
        epoch_seconds, tick = [], [time.perf_counter()]

        def on_epoch(logs):
            now = time.perf_counter()
            epoch_seconds.append(now - tick[0])
            tick[0] = now
            bar.set_postfix(loss=f"{logs['loss']:.3f}", val_acc=f"{logs['val_accuracy']:.3f}", refresh=False)
            bar.update(1)

        start = time.perf_counter()
        try:
            history = fast_fit(inputs.model, inputs.x["train"], data["train"][1], inputs.x["validation"],
                               data["validation"][1], epochs=epochs, batch_size=batch_size,
                               optimizer=optimizer, lr=lr, momentum=momentum, seed=seed,
                               on_epoch=on_epoch, prepare=inputs.prepare, views=inputs.views,
                               monitor="val_accuracy", patience=early_stopping, keep_best=True,
                               baseline=before["accuracy"], eval_batch=inputs.eval_batch,
                               jit=get_backbone(ft.spec.backbone).xla, augment=inputs.augment)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        metrics = {split: evaluate(split) for split in data}
        write_predictions(os.path.join(folder, "predictions.csv"), head.class_names,
                          {s: ([r.path for r, _ in kept[s]], data[s][1], probabilities[s]) for s in data})
        write_splits(folder, {**record, "data_root": data_root, "splits": {
            s: {"paths": [r.path for r, _ in kept[s]], "sha256": [sha for _, sha in kept[s]],
                "labels": [r.label for r, _ in kept[s]]} for s in kept}})
        accs = history["val_accuracy"]
        metrics.update(fit_seconds=seconds, epoch_seconds=epoch_seconds,
                       before_finetuning={"validation": {"loss": before["loss"], "accuracy": before["accuracy"]}},
                       kept_epoch=int(np.argmax(accs)) + 1 if max(accs) > before["accuracy"] else 0)
        if inputs.cache:
            metrics["cache_frozen"] = inputs.cache
        _save(folder, ft, head, history, metrics, dict(
            unfreeze_from=ft.unfreeze_from, epochs=epochs, lr=lr, momentum=momentum,
            optimizer=optimizer, batch_size=batch_size, augment=augment, seed=seed,
            early_stopping=early_stopping, cache_frozen=cache_frozen,
            views=inputs.views if cache_frozen else None), data, dict(data=data_root, requested=requested))
    return FinetuneResult(out_dir, metrics, history, seconds, opts)


def _save(folder, ft, head, history, metrics, config, data, inputs: dict) -> None:
    from ..plots import confusion_plots, training_curves

    ft.model.save(os.path.join(folder, "model.keras"))
    write_history(folder, history)
    training_curves(history, os.path.join(folder, "curves.png"), "fine-tuning")
    confusion_plots(metrics, head.class_names, folder, "fine-tuned")
    write_json(os.path.join(folder, "metrics.json"), metrics)
    write_manifest(folder, {
        "kind": "finetuned", "classifier": "finetuned", "model_file": "model.keras",
        "config": config, "class_names": head.class_names,
        "head": {"folder": head.folder, "classifier": head.manifest["classifier"],
                 "manifest_sha256": head.manifest_sha256},
        **inputs, "extractor_key": head.manifest["extractor_key"], "extractor": head.manifest["extractor"],
        "weights_path": ft.spec.weights_path or "", "input": "preprocessed image "
        f"{ft.spec.input_size}x{ft.spec.input_size}x3 ({ft.spec.preprocessing})",
        "trainable_layers": ft.trainable_layers, "frozen_layers": len(ft.frozen_layers),
        "images": {s: int(len(d[1])) for s, d in data.items()},
        "skipped_images": {s: d[2] for s, d in data.items() if d[2]},
        "metrics": {s: {"accuracy": m["accuracy"], "loss": m["loss"]} for s, m in metrics.items()
                    if isinstance(m, dict) and "accuracy" in m},
    })
