"""Stage 3: fine-tune the top of the base together with the trained head (plain path).

Images are decoded once (Pillow bilinear, exactly as in stage 1) into memory, then
fed per epoch through the backbone's own preprocessing; augmentation runs inside
the model and only in training. The best epoch by validation accuracy is kept,
then scored on test. The folder is written like a stage-2 classifier: model,
metrics, history, curves and a manifest hashing every file.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from features import ConfigError, DatasetError, get_backbone
from features.errors import choice_error
from features.batches import decoded_batches
from features.dataset import discover

from .artifacts import load_classifier, staged_folder, write_history, write_json, write_manifest
from .finetune_model import AUGMENT_DEFAULTS, build_finetune_model
from .heads import OPTIMIZERS, compile_head
from .metrics import class_probabilities, scores

@dataclass
class FinetuneResult:
    """Where the fine-tuned model is and how it scored (metrics per split)."""

    folder: str
    metrics: dict
    history: dict
    seconds: float


def _decode_split(records, size: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Return (uint8 images, labels, [(path, reason)] skipped) for a split, decoded once.

    The whole split is held in memory (2,000 images at 224 px: 300 MB).
    """
    images = np.empty((len(records), size, size, 3), np.uint8)
    labels, skipped, n = [], [], 0
    label_of = {r.path: r.label for r in records}
    for paths, batch, failures in decoded_batches([(r.path, r.abspath) for r in records], size, 64):
        skipped.extend(failures)
        images[n:n + len(paths)] = batch
        labels.extend(label_of[p] for p in paths)
        n += len(paths)
    return images[:n], np.asarray(labels, np.int64), skipped


def _dataset(tf, images, labels, preprocess, batch_size, shuffle_seed=None):
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    def prepare(x, y):  # the backbone's own preprocessing, as in stage 1
        return preprocess(tf.cast(x, tf.float32)), y

    return ds.batch(batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def finetune(head_dir: str, data_dir: str, out_dir: str, *, unfreeze_from: Optional[str] = None,
             epochs: int = 10, lr: float = 1e-4, momentum: float = 0.9, optimizer: str = "sgd",
             batch_size: int = 16, augment: Optional[dict] = None, seed: int = 0,
             early_stopping: int = 0, allow_untrained_head: bool = False,
             weights: Optional[str] = None, verbose: bool = True) -> FinetuneResult:
    """Fine-tune the head in ``head_dir`` with its base on ``data_dir``; returns the result.

    Raises HeadError, WeightsError, ConfigError or DatasetError (all BneckError).
    """
    from features.progress import progress_bar
    from features.tfimport import import_tensorflow

    tf = import_tensorflow()
    import keras

    if optimizer not in OPTIMIZERS:
        raise choice_error("optimizer", OPTIMIZERS, optimizer)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer. Received: {name}={value!r}.")
    augment = {**AUGMENT_DEFAULTS, **(augment or {})}
    head = load_classifier(head_dir)
    dataset = discover(data_dir)
    if dataset.class_names != head.class_names:
        raise DatasetError(f"{data_dir} has classes {dataset.class_names}, but the head in "
                           f"{head_dir} was trained on {head.class_names}.")
    if "train" not in dataset.splits or "validation" not in dataset.splits:
        raise DatasetError(f"fine-tuning needs train/ and validation/ in {data_dir}; found "
                           f"{', '.join(dataset.splits)}.")
    keras.utils.set_random_seed(seed)
    ft = build_finetune_model(head, unfreeze_from, augment, seed, allow_untrained_head, weights)
    preprocess = get_backbone(ft.spec.backbone).preprocess_fn()
    data = {s: _decode_split(recs, ft.spec.input_size) for s, recs in dataset.splits.items()}
    binary = len(head.class_names) == 2
    compile_head(ft.model, len(head.class_names), optimizer, lr, momentum)  # after trainable changes
    out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
    with staged_folder(out_dir) as folder:
        (xt, yt, _), (xv, yv, _) = data["train"], data["validation"]
        y_cast = (lambda v: v.astype(np.float32)) if binary else (lambda v: v)
        # The frozen-head starting point is the first candidate: an epoch is kept only if it
        # beats it, so a run that goes wrong (too high a learning rate) never returns a
        # model worse than the head it started from.
        base_loss, base_acc = ft.model.evaluate(_dataset(tf, xv, y_cast(yv), preprocess, 64), verbose=0)
        best_file = os.path.join(folder, ".best.weights.h5")
        start_weights = ft.model.get_weights()
        bar = progress_bar(epochs, "fine-tune", verbose, unit="epoch")
        callbacks = [keras.callbacks.ModelCheckpoint(best_file, monitor="val_accuracy", mode="max",
                                                     save_best_only=True, save_weights_only=True,
                                                     initial_value_threshold=base_acc),
                     keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: (
                         bar.set_postfix(loss=f"{logs['loss']:.3f}", val_acc=f"{logs['val_accuracy']:.3f}",
                                         refresh=False), bar.update(1)))]
        if early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                                           patience=early_stopping))
        start = time.perf_counter()
        try:
            history = ft.model.fit(_dataset(tf, xt, y_cast(yt), preprocess, batch_size, seed),
                                   validation_data=_dataset(tf, xv, y_cast(yv), preprocess, 64),
                                   epochs=epochs, callbacks=callbacks, shuffle=False,
                                   verbose=0).history
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        if os.path.exists(best_file):  # some epoch beat the frozen head
            ft.model.load_weights(best_file)
            os.remove(best_file)
        else:
            ft.model.set_weights(start_weights)
        metrics = {}
        for split, (x, y, _) in data.items():
            out = ft.model.predict(_dataset(tf, x, y, preprocess, 64), verbose=0)
            metrics[split] = scores(y, class_probabilities(out), head.class_names)
        metrics["fit_seconds"] = seconds
        metrics["before_finetuning"] = {"validation": {"loss": float(base_loss), "accuracy": float(base_acc)}}
        accs = history["val_accuracy"]
        metrics["kept_epoch"] = int(np.argmax(accs)) + 1 if max(accs) > base_acc else 0
        _save(folder, ft, head, history, metrics, dict(
            unfreeze_from=ft.unfreeze_from, epochs=epochs, lr=lr, momentum=momentum,
            optimizer=optimizer, batch_size=batch_size, augment=augment, seed=seed,
            early_stopping=early_stopping), data)
    return FinetuneResult(out_dir, metrics, history, seconds)


def _save(folder, ft, head, history, metrics, config, data) -> None:
    from .plots import confusion_plots, training_curves

    ft.inference_model().save(os.path.join(folder, "model.keras"))
    write_history(folder, history)
    training_curves(history, os.path.join(folder, "curves.png"), "fine-tuning")
    confusion_plots(metrics, head.class_names, folder, "fine-tuned")
    write_json(os.path.join(folder, "metrics.json"), metrics)
    write_manifest(folder, {
        "kind": "finetuned", "classifier": "finetuned", "model_file": "model.keras",
        "config": config, "class_names": head.class_names,
        "head": {"folder": head.folder, "classifier": head.manifest["classifier"],
                 "manifest_sha256": _sha(os.path.join(head.folder, "manifest.json"))},
        "extractor_key": head.manifest["extractor_key"], "extractor": head.manifest["extractor"],
        "weights_path": ft.spec.weights_path or "", "input": "preprocessed image "
        f"{ft.spec.input_size}x{ft.spec.input_size}x3 ({ft.spec.preprocessing})",
        "trainable_layers": ft.trainable_layers, "frozen_layers": len(ft.frozen_layers),
        "images": {s: int(len(d[1])) for s, d in data.items()},
        "skipped_images": {s: d[2] for s, d in data.items() if d[2]},
        "metrics": {s: {"accuracy": m["accuracy"], "loss": m["loss"]} for s, m in metrics.items()
                    if isinstance(m, dict) and "accuracy" in m},
    })


def _sha(path: str) -> str:
    from features.hashing import sha256_file

    return sha256_file(path)
