"""The run report: ``report.md`` and a self-contained ``report.html`` (images inlined).

Dataset summary, extractor, leaderboard, training curves (raw and smoothed),
confusion matrices, the worst misclassified test images with their probabilities,
and the time each stage took with what came from cache.

Nothing from outside reaches the report: a figure is inlined only from the bytes of
a model folder that passed its manifest check (``artifacts.read_verified``), and a
misclassified image is drawn only when its path resolves inside the data folder.
"""
from __future__ import annotations

import base64
import html
import io
import os

import numpy as np

from features.atomic import atomic_open
from features.files import path_inside
from ..artifacts import ArtifactError, load_classifier, read_predictions, read_verified
from ..plots import plt
from .gain import run_test_truth


def worst_misclassified(result, limit: int) -> tuple[str, list[dict]]:
    """Return (model label, rows) of the most confidently wrong test predictions.

    From the fine-tuned model when there is one (its ``predictions.csv``), else from the
    best classifier on the cached test features. Rows: path, true, predicted,
    probabilities; most confident mistake first.
    """
    ft = result.stages.finetune
    if ft is not None:
        text = read_verified(ft.folder).files.get("predictions.csv", b"").decode("utf-8", errors="replace")
        try:
            truth = run_test_truth(result.folder)  # only the run's own test images, with their true classes
            rows = [r for r in read_predictions(text, f"{ft.folder}/predictions.csv")
                    if r["split"] == "test" and truth.get(r["path"]) == r["true"]]
        except ArtifactError:
            return "", []  # the report shows no mistakes grid rather than fail after the work is done
        label = ft.name
    else:
        best = next((r for r in result.leaderboard if r.kind == "classifier"), None)
        test_file = os.path.join(result.folder, "features", "test.h5")
        if best is None or not os.path.isfile(test_file):
            return "", []
        rows, label = _classifier_predictions(best.folder, test_file), best.name
    wrong = [r for r in rows if r["true"] != r["predicted"]]
    wrong.sort(key=lambda r: -r["probabilities"][r["predicted"]])
    return label, wrong[:limit]


def _classifier_predictions(folder: str, test_file: str) -> list[dict]:
    from features import read_features

    from ..predict import classifier_proba

    clf = load_classifier(folder)
    f = read_features(test_file)
    probs = classifier_proba(clf, f.features)
    names = clf.class_names
    return [{"split": "test", "path": p, "true": names[int(y)], "predicted": names[int(np.argmax(row))],
             "probabilities": dict(zip(names, map(float, row)))}
            for p, y, row in zip(f.paths, f.labels, probs)]


def worst_grid(rows: list[dict], data_root: str, size: int = 160):
    """Return PNG bytes of the misclassified images with true class and probabilities; None if none.

    An image whose path leads outside ``data_root`` is not opened ("outside the data folder").
    """
    from features.decode import decode_image

    if not rows:
        return None
    cols = min(4, len(rows))
    lines = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(lines, cols, figsize=(3.0 * cols, 3.3 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        path = path_inside(data_root, row["path"])
        try:
            if path is None:
                raise ValueError("outside the data folder")
            ax.imshow(decode_image(path, size))
        except Exception:  # noqa: BLE001 - a vanished or refused file still gets its caption
            ax.text(0.5, 0.5, "image unavailable", ha="center", va="center")
        p = row["probabilities"][row["predicted"]]
        ax.set_title(f"{os.path.basename(row['path'])}\ntrue {row['true']}, "
                     f"said {row['predicted']} ({100 * p:.0f}%)", fontsize=9, color="firebrick")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


class _Figures:
    """PNG figures taken from model folders that pass their manifest check (each verified once)."""

    def __init__(self):
        self._folders: dict = {}

    def block(self, folder, name: str, alt: str):
        """Return ('img', path, alt, bytes), a ('text', ...) note when the folder fails, or None."""
        if folder not in self._folders:
            try:
                self._folders[folder] = read_verified(folder)
            except ArtifactError as exc:
                self._folders[folder] = exc
        verified = self._folders[folder]
        if isinstance(verified, ArtifactError):
            return ("text", f"{alt}: not shown, the folder failed its check ({verified})")
        data = verified.files.get(name)
        return ("img", os.path.join(folder, name), alt, data) if data else None


def _finetuning_verdict(ft, skipped: str) -> str:
    """One sentence: what fine-tuning gained over the best frozen model on test, and whether it counts."""
    if ft is None:
        return f"Fine-tuning: skipped ({skipped})."
    kept = ft.metrics.get("kept_epoch")
    start = ("no fine-tuned epoch beat the head on validation, so the model is the head itself; "
             if kept == 0 else "")
    if ft.gain is None:
        return f"Fine-tuning: {start}no paired comparison on test ({ft.gain_note or 'no test split'})."
    return f"Fine-tuning: {start}{ft.name} against {ft.versus} on the same test images: {ft.gain.describe()}."


def _sections(result, worst_label: str, worst_png) -> list[tuple[str, list]]:
    """Return (title, blocks): ('table', headers, rows), ('text', str) or ('img', path, alt, png bytes)."""
    figures_of = _Figures()
    stages = result.stages
    ex, tr, ft = stages.extract, stages.train, stages.finetune
    data_rows = [[s, v["images"], len(v["quarantined"]), v["computed"], v["reused"]]
                 for s, v in ex.splits.items()]
    quarantined = [f"{s}: {p} ({why})" for s, v in ex.splits.items() for p, why in v["quarantined"]]
    top = result.leaderboard[0] if result.leaderboard else None
    summary = (f"Best by validation accuracy: {top.name}, {_pct(top.accuracy('validation'))} validation, "
               f"{_pct(top.accuracy('test'))} test." if top else "No model trained.")
    out = [("Summary", [("text", summary)]), ("Dataset", [("text", f"{result.config['data']}: {len(ex.classes)} classes "
                                 f"({', '.join(ex.classes)})."),
                        ("table", ["split", "images", "quarantined", "features computed", "from cache"], data_rows)]
            + ([("text", "Quarantined: " + "; ".join(quarantined[:20]))] if quarantined else [])),
           ("Extractor", [("table", ["field", "value"],
                           [[k, str(v)] for k, v in ex.extractor.items() if v is not None]),
                          ("text", f"extractor key {ex.extractor_key}")])]
    board = [[i + 1, r.name, _pct(r.accuracy("validation")), _pct(r.accuracy("test")), f"{r.fit_seconds:.1f}"]
             for i, r in enumerate(result.leaderboard)]
    out.append(("Leaderboard", [("table", ["rank", "model", "val acc", "test acc", "fit s"], board),
                                ("text", _finetuning_verdict(ft, stages.finetune_skipped))]))
    figures = [figures_of.block(r.folder, "curves.png", f"{r.name}: training curves") for r in tr]
    if ft is not None:
        figures.append(figures_of.block(ft.folder, "curves.png", "fine-tuning curves"))
    figures = [f for f in figures if f]
    out.append(("Training curves (faint: raw, solid: smoothed)", figures or [("text", "no Keras model trained")]))
    best = next((r for r in result.leaderboard if r.kind == "classifier"), None)
    confusions = [figures_of.block(r.folder, "confusion_test.png", f"{r.name}: test confusion matrix")
                  for r in (best, ft) if r is not None]
    confusions = [c for c in confusions if c]
    out.append(("Confusion matrices (test)", confusions or [("text", "no test split")]))
    if worst_png:
        out.append((f"Most confident mistakes on test ({worst_label})",
                    [("img", os.path.join(result.folder, "worst_test.png"), "worst misclassified", worst_png)]))
    timing = [["extract", f"{ex.seconds:.1f}",
               "network never built: every row from cache" if not ex.model_built
               else f"{ex.forward_images} images through the network"]]
    for r in tr:
        timing.append([f"train {r.name}", f"{r.fit_seconds:.1f}",
                       "reused (same options, same features)" if r.reused else f"trained: {r.why}"])
    if ft is not None:
        cache = ft.metrics.get("cache_frozen")
        how = "reused (same head, same settings)" if ft.reused else f"fine-tuned: {ft.why}"
        if cache and not ft.reused:
            how += f"; frozen part: {cache['rows_computed']} rows computed, {cache['rows_reused']} from cache"
        timing.append(["fine-tune", f"{ft.fit_seconds:.1f}", how])
    else:
        timing.append(["fine-tune", "-", f"skipped: {stages.finetune_skipped}"])
    out.append(("Time per stage", [("table", ["stage", "seconds", "why"], timing)]))
    return out


def _md(sections) -> str:
    lines = ["# bneck run report", ""]
    for title, blocks in sections:
        lines += [f"## {title}", ""]
        for block in blocks:
            if block[0] == "text":
                lines += [block[1], ""]
            elif block[0] == "img":
                lines += [f"![{block[2]}]({block[1]})", ""]
            else:
                _, headers, rows = block
                lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]
    return "\n".join(lines)


def _inline(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;
padding:.3em .7em;text-align:left}th{background:#f4f4f4}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}p{line-height:1.45}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}figure{margin:0}
figcaption{color:#666;font-size:.9em}.summary{font-size:1.1em;background:#f6f8fa;padding:.6em 1em}"""


def _html(sections) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>bneck run report</title>",
             f"<style>{STYLE}</style></head><body><h1>bneck run report</h1>"]
    for title, blocks in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        images = [b for b in blocks if b[0] == "img"]
        if images:  # side by side when they fit
            parts.append("<div class='row'>" + "".join(
                f"<figure><img src='{_inline(b[3])}' alt='{html.escape(b[2])}'>"
                f"<figcaption>{html.escape(b[2])}</figcaption></figure>" for b in images) + "</div>")
        for block in blocks:
            if block[0] == "text":
                css = " class='summary'" if title == "Summary" else ""
                parts.append(f"<p{css}>{html.escape(block[1])}</p>")
            elif block[0] == "table":
                _, headers, rows = block
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
                parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result, worst: int = 16) -> str:
    """Write ``report.md`` and ``report.html`` into the run folder; returns the HTML path."""
    label, rows = worst_misclassified(result, worst)
    png = worst_grid(rows, os.path.abspath(result.config["data"]))
    if png:
        with atomic_open(os.path.join(result.folder, "worst_test.png"), "wb") as handle:
            handle.write(png)
    sections = _sections(result, label, png)
    md = _md(sections).replace(result.folder + os.sep, "")  # relative image links
    with atomic_open(os.path.join(result.folder, "report.md")) as handle:
        handle.write(md)
    path = os.path.join(result.folder, "report.html")
    with atomic_open(path) as handle:
        handle.write(_html(sections))
    return path
