"""What stage 3 writes into a fine-tuned folder: predictions, the image splits, the recorded config,
and the model with its history, curves, metrics and typed manifest."""

from __future__ import annotations

import os

from bneck.pipeline.artifacts import write_history, write_json, write_manifest
from bneck.pipeline.domain import Domain, calibrate, pooled
from bneck.pipeline.image_splits import write_splits
from bneck.pipeline.manifests import FinetunedManifest, HeadRef
from bneck.pipeline.predictions_csv import write_predictions


def write_prediction_files(folder: str, class_names: list, data: dict, probabilities: dict, mirrored: dict) -> None:
    """Write predictions.csv and, with test-time augmentation, predictions_tta.csv into ``folder``."""
    for name, probs in (("predictions.csv", probabilities), ("predictions_tta.csv", mirrored)):
        if probs:
            write_predictions(
                os.path.join(folder, name),
                class_names,
                {s: (data[s].paths, data[s].labels, p) for s, p in probs.items()},
            )


def validation_domain(ft, records, class_names: list) -> Domain | None:
    """The fine-tuned model's domain (``pipeline.domain``): its base's pooled features of the validation
    images, as fine-tuned, in batches (bounded memory), run eagerly (tracing NASNetMobile's base again took
    longer than the pass itself in the test suite)."""
    import numpy as np

    from bneck.core.tfimport import import_tensorflow
    from bneck.features import preprocess_for
    from bneck.features.images.batches import decoded_batches

    tf = import_tensorflow()

    def base(x):  # eager: one pass over the validation images costs less than tracing the base once more
        return ft.feature_model(x, training=False)

    preprocess, label = preprocess_for(ft.spec), {r.path: r.label for r, _ in records}
    vectors, labels = [], []
    for paths, batch, _ in decoded_batches([(r.path, r.abspath) for r, _ in records], ft.spec.input_size, 32):
        if paths:
            vectors.append(pooled(base(tf.constant(preprocess(batch.astype(np.float32)))).numpy()))
            labels.extend(label[p] for p in paths)
    if not vectors:
        return None
    return calibrate(np.concatenate(vectors), np.asarray(labels), len(class_names))


def write_image_splits(folder: str, record: dict, data_root: str, data: dict) -> None:
    """Write the splits record of the images fine-tuned on (paths, sha256, labels per split) into ``folder``."""
    write_splits(
        folder,
        {
            **record,
            "data_root": data_root,
            "splits": {s: {"paths": d.paths, "sha256": d.shas, "labels": d.labels.tolist()} for s, d in data.items()},
        },
    )


_RECORDED_OPTIONS = (
    "epochs",
    "lr",
    "momentum",
    "optimizer",
    "schedule",
    "warmup",
    "label_smoothing",
    "batch_size",
    "seed",
    "early_stopping",
    "cache_frozen",
    "tta",
)


def recorded_config(opts: dict, unfreeze_from: str | None, augment: dict, views: int | None) -> dict:
    """Return the manifest's config: the training options, the unfreeze point, augmentation and views."""
    config = {k: opts[k] for k in _RECORDED_OPTIONS}
    config.update(unfreeze_from=unfreeze_from, augment=augment, views=views)
    return config


def save_finetuned(folder, ft, head, history, metrics, config, data, data_root: str, requested: dict) -> None:
    """Write the model, history, curves, confusion plots, metrics and manifest into ``folder``."""
    from bneck.pipeline.plots import confusion_plots, training_curves

    ft.model.save(os.path.join(folder, "model.keras"))
    write_history(folder, history)
    training_curves(history, os.path.join(folder, "curves.png"), "fine-tuning")
    confusion_plots(metrics, head.class_names, folder, "fine-tuned")
    write_json(os.path.join(folder, "metrics.json"), metrics)
    spec = ft.spec
    write_manifest(
        folder,
        FinetunedManifest(
            kind="finetuned",
            classifier="finetuned",
            model_file="model.keras",
            config=config,
            class_names=head.class_names,
            head=HeadRef(head.folder, head.manifest.classifier, head.manifest_sha256),
            data=data_root,
            requested=requested,
            extractor_key=head.manifest.extractor_key,
            extractor=head.manifest.extractor,
            weights_path=spec.weights_path or "",
            input=f"preprocessed image {spec.input_size}x{spec.input_size}x3 ({spec.preprocessing})",
            trainable_layers=ft.trainable_layers,
            frozen_layers=len(ft.frozen_layers),
            images={s: int(len(d.labels)) for s, d in data.items()},
            skipped_images={s: d.skipped for s, d in data.items() if d.skipped},
            metrics={
                s: {"accuracy": m["accuracy"], "loss": m["loss"]}
                for s, m in metrics.items()
                if isinstance(m, dict) and "accuracy" in m
            },
        ),
    )
