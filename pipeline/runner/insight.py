"""What the report says beyond the leaderboard: per-class scores, confusion matrices of every model,
over-fitting notes and data health, each as report blocks ('text', 'table' or 'img')."""

from __future__ import annotations

import os

from bneck.pipeline.artifacts import read_history
from bneck.pipeline.plots import confusion_grid
from bneck.pipeline.runner.health import LABEL_ISSUE_BELOW, LABEL_ISSUE_MEASURED, SHOWN, Health

RISING_EPOCHS = 5  # validation loss rising this many epochs after its best is worth a note


def exportable(result) -> bool:
    """Whether ``bneck export`` takes this leaderboard row (Keras heads, fine-tuned models, folded linear ones)."""
    from bneck.pipeline.training.classifiers import list_classifiers

    exports = {e.name for e in list_classifiers() if e.kind == "keras" or e.fold is not None}
    if result.kind == "ensemble":  # every member must be layers
        from bneck.pipeline.artifacts import ArtifactError, read_manifest

        try:
            members = getattr(read_manifest(result.folder), "members", [])
        except ArtifactError:
            return False
        return all(m.kind == "finetuned" or m.classifier in exports for m in members)
    return result.kind == "fine-tuned" or result.name in exports


def best_exportable(leaderboard):
    """The first row ``bneck export`` takes, or None."""
    return next((r for r in leaderboard if exportable(r)), None)


def per_class_rows(leaderboard) -> list[list]:
    """model, class, precision, recall, F1, support on test, for every model that has them."""
    rows = []
    for r in leaderboard:
        per_class = (r.metrics.get("test") or {}).get("per_class") if isinstance(r.metrics, dict) else None
        for name, v in (per_class or {}).items():
            rows.append([r.name, name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", v["support"]])
    return rows


def confusion_block(leaderboard, class_names: list[str], folder: str):
    """One figure: every model's test confusion matrix (small multiples); None without test scores."""
    models = [
        (r.name, r.metrics["test"]["confusion_matrix"])
        for r in leaderboard
        if isinstance(r.metrics.get("test"), dict) and "confusion_matrix" in r.metrics["test"]
    ]
    if not models:
        return None
    return (
        "img",
        os.path.join(folder, "confusion_all.png"),
        "test confusion matrix of every model",
        confusion_grid(models, class_names),
    )


def overfitting(history: dict) -> str | None:
    """A sentence when validation loss kept rising after its best epoch, else None."""
    loss = history.get("val_loss") or []
    if len(loss) < RISING_EPOCHS + 1:
        return None
    best = min(range(len(loss)), key=loss.__getitem__)
    after = len(loss) - 1 - best
    if after < RISING_EPOCHS or loss[-1] <= loss[best] * 1.05:
        return None
    return (
        f"validation loss was lowest at epoch {best + 1} ({loss[best]:.3f}) and rose for the {after} epochs "
        f"after it (to {loss[-1]:.3f}): the head over-fits"
    )


def overfit_notes(results, verified_files) -> list[str]:
    """One note per trained Keras model whose history shows over-fitting, with the option that helps."""
    notes = []
    for r in results:
        files = verified_files(r.folder)
        if not files or "history.csv" not in files:
            continue
        said = overfitting(read_history(files["history.csv"]))
        if said:
            helps = (
                "[finetune] epochs = fewer, or a lower lr"
                if r.kind == "fine-tuned"
                else f"[train.{r.name}] early_stopping = 5 (stops at the best epoch and keeps it), or a higher dropout"
            )
            notes.append(f"{r.name}: {said}. What helps: {helps}.")
    return notes


def short_name(path: str) -> str:
    """``class/file.jpg``: the file and its folder (the same file name may be in several classes)."""
    parent = os.path.basename(os.path.dirname(path))
    return f"{parent}/{os.path.basename(path)}" if parent else os.path.basename(path)


def _entries(found: list[dict]) -> list[tuple[str, str]]:
    out = []
    for group in found[:SHOWN]:
        for split, path in group["items"][:2]:
            out.append((path, f"{short_name(path)} ({split})\n{group['caption']}"))
    return out


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def health_blocks(health: Health, quarantined: list[list], grid, folder: str) -> list:
    """Blocks of the data-health section; ``grid(entries)`` draws thumbnails (PNG bytes or None)."""
    blocks = []
    if quarantined:
        blocks.append(("table", ["split", "file", "why it was left out"], quarantined))
    else:
        blocks.append(("text", "Quarantined files: none (every image decoded)."))
    if health.note:
        return blocks + [("text", health.note)]
    across = [g for g in health.exact if g["across"]]
    blocks.append(
        (
            "text",
            f"Exact duplicates (same bytes): {len(health.exact)} group(s), {len(across)} across splits"
            + (" - an image in two splits makes the held-out score optimistic." if across else "."),
        )
    )
    if health.exact:
        blocks.append(
            (
                "table",
                ["files", "splits"],
                [
                    [", ".join(p for _, p in g["items"][:4]), ", ".join(sorted({s for s, _ in g["items"]}))]
                    for g in health.exact[:SHOWN]
                ],
            )
        )
    blocks.append(
        (
            "text",
            f"Near duplicates (different files, feature cosine >= 0.98): {health.near_pairs} pair(s), "
            f"{health.near_across} across splits"
            + (f" (the {len(health.near)} most similar listed)." if health.near_pairs > len(health.near) else "."),
        )
    )
    picture = grid(_entries(health.near))
    if picture:
        blocks.append(
            ("img", os.path.join(folder, "near_duplicates.png"), "near-duplicate pairs, side by side", picture)
        )
    blocks.append(
        (
            "text",
            f"Likely label errors: {len(health.label_errors)} training image(s) to which a model that never saw "
            f"them (5-fold cross-validation) gives their own class a probability under "
            f"{LABEL_ISSUE_BELOW:.0%}"
            + (", the least likely first; every one in label_issues.csv." if health.label_errors else ".")
            + f" Measured with 5 % of the training images moved into a wrong class folder (docs/results.md): "
            f"{LABEL_ISSUE_MEASURED}, where the cross-validated model named 98 % and 89 % of the folders' "
            f"classes right; here it named {_percent(health.label_model_accuracy)}: the weaker it is, the more "
            "false alarms. Paths are under the data folder. Look before you move a file.",
        )
    )
    picture = grid(_entries(health.label_errors))
    if picture:
        blocks.append(("img", os.path.join(folder, "label_errors.png"), "likely label errors", picture))
    return blocks
