"""Which images a model was made from: the exact lists its feature files recorded, by sha256.

Every model folder holds ``splits.json``: for train, validation and test, the image
paths (relative to the data root), their sha256 and labels, plus how the split was
made (layout, fractions, seed, excluded classes). Stage 3 fine-tunes on exactly those
images, found under the data folder and checked byte for byte; ``evaluate`` and
``predict`` say when an image was one the model was trained on. Nothing re-derives a
split, so a non-default ``--split``/``--seed``/``--exclude`` can never leak training
images into validation or test.
"""

from __future__ import annotations

import json
import os

from bneck.core.errors import DatasetError
from bneck.core.files import path_inside
from bneck.core.hashing import sha256_files
from bneck.features.images.dataset import ImageRecord

SPLITS_FILE = "splits.json"


def splits_record(attrs: dict) -> dict:
    """Return the record of a FeatureSet's splits (``attrs``: split -> its read_summary)."""
    first = next(iter(attrs.values()))
    return {
        "data_root": first.get("data_root"),
        "layout": first.get("layout"),
        "split_spec": first.get("split_spec"),
        "excluded_classes": first.get("excluded_classes"),
        "follow_links": bool(first.get("follow_links", False)),
        "class_names": first["class_names"],
        "splits": {
            split: {"paths": a["paths"], "sha256": a["sha256"], "labels": [int(v) for v in a["labels"]]}
            for split, a in attrs.items()
        },
    }


def write_splits(folder: str, record: dict) -> None:
    """Write ``record`` as the folder's ``splits.json``."""
    with open(os.path.join(folder, SPLITS_FILE), "w") as handle:
        json.dump(record, handle)


def read_splits(files: dict, folder: str) -> dict:
    """Return the ``splits.json`` of a verified model folder (its bytes in ``files``), checked: a data
    root, and per split equally long lists of relative paths, sha256 hex digests and integer labels.
    Raises ArtifactError."""
    from bneck.pipeline.manifests import ArtifactError

    try:
        record = json.loads(files[SPLITS_FILE])
        _check_record(record)
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise ArtifactError(
            f"{folder} has no readable {SPLITS_FILE} ({str(exc)[:200]}): it does not say which "
            "images it was made from. Retrain it with `bneck train`."
        ) from None
    return record


def _check_record(record) -> None:
    """Raise TypeError/ValueError unless ``record`` has the shape ``splits_record`` writes."""
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("data_root"), str)
        or not isinstance(record.get("splits"), dict)
        or not isinstance(record.get("class_names"), list)
    ):
        raise TypeError("not a record of splits")
    classes = len(record["class_names"])
    for split, part in record["splits"].items():
        lists = [part.get(k) if isinstance(part, dict) else None for k in ("paths", "sha256", "labels")]
        if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
            raise TypeError(f"split {split!r} lacks equally long paths, sha256 and labels")
        paths, shas, labels = lists
        if (
            not all(isinstance(p, str) for p in paths)
            or not all(isinstance(h, str) and len(h) == 64 for h in shas)
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < classes for v in labels)
        ):
            raise TypeError(f"split {split!r} holds a path, sha256 or label of the wrong type")


def seen_in(record: dict) -> dict[str, str]:
    """Return {image sha256: split} for every image the model's splits hold."""
    return {sha: split for split, part in record["splits"].items() for sha in part["sha256"]}


def data_root_of(record: dict, data_dir: str | None) -> str:
    """Return the absolute data folder: ``data_dir``, else the one ``record`` names."""
    return os.path.abspath(os.path.expanduser(str(data_dir or record["data_root"])))


def recorded_images(record: dict, data_dir: str | None, workers: int = 0) -> tuple[str, dict]:
    """Return (data root, {split: [(ImageRecord, sha256)]}) of the recorded images under ``data_dir``.

    ``data_dir`` defaults to the recorded data root. Every image must be there with its
    recorded bytes; raises DatasetError naming how many differ and the first few.
    """
    root = data_root_of(record, data_dir)
    if not os.path.isdir(root):
        raise DatasetError(
            f"data folder not found: {root}. Give --data, the folder the features were "
            f"extracted from (recorded: {record['data_root']})."
        )
    out, wrong = {}, []
    follow = bool(record.get("follow_links", False))
    for split, part in record["splits"].items():
        escaping = [p for p in part["paths"] if path_inside(root, p, follow) is None]
        if escaping:
            raise DatasetError(
                f"the model's record of its {split} images names {len(escaping)} path(s) that leave the data "
                f"folder {root} (first: {str(escaping[0])[:200]!r}); bneck reads images only inside the data "
                "folder, so it refuses the record. Retrain the model from features you extracted yourself."
            )
        records = [ImageRecord(p, os.path.join(root, p), int(label)) for p, label in zip(part["paths"], part["labels"])]
        hashed = sha256_files([r.abspath for r in records], workers)
        for rec, want, (got, problem) in zip(records, part["sha256"], hashed):
            if got != want:
                wrong.append(f"{rec.path}: {problem or 'different bytes'}")
        out[split] = list(zip(records, part["sha256"]))
    if wrong:
        raise DatasetError(
            f"{root} does not hold the images the model was made from: {len(wrong)} of "
            f"{sum(len(v) for v in out.values())} differ (first: {'; '.join(wrong[:3])}). Give --data, the "
            f"folder the features were extracted from (recorded: {record['data_root']}); bneck never "
            "re-derives a split, so that no training image can reach validation or test."
        )
    return root, out
