"""The run report: ``report.md`` and a self-contained ``report.html`` (images inlined).

Dataset summary, extractor, leaderboard, training curves (raw and smoothed),
confusion matrices, the worst misclassified test images with their probabilities,
and the time each stage took with what came from cache.
"""
from __future__ import annotations

import base64
import html
import os

import numpy as np

from features.atomic import atomic_open
from .artifacts import load_classifier, read_predictions
from .plots import plt


def worst_misclassified(result, limit: int) -> tuple[str, list[dict]]:
    """Return (model label, rows) of the most confidently wrong test predictions.

    From the fine-tuned model when there is one (its ``predictions.csv``), else from the
    best classifier on the cached test features. Rows: path, true, predicted,
    probabilities; most confident mistake first.
    """
    ft = result.stages.get("finetune", {})
    if "folder" in ft:
        rows = [r for r in read_predictions(os.path.join(ft["folder"], "predictions.csv"))
                if r["split"] == "test"]
        label = f"fine-tuned {ft['head']}"
    else:
        best = next((r for r in result.leaderboard if r["kind"] == "classifier"), None)
        test_file = os.path.join(result.folder, "features", "test.h5")
        if best is None or not os.path.isfile(test_file):
            return "", []
        rows, label = _classifier_predictions(best["folder"], test_file), best["model"]
    wrong = [r for r in rows if r["true"] != r["predicted"]]
    wrong.sort(key=lambda r: -r["probabilities"][r["predicted"]])
    return label, wrong[:limit]


def _classifier_predictions(folder: str, test_file: str) -> list[dict]:
    from features import read_features

    from .predict import classifier_proba

    clf = load_classifier(folder)
    f = read_features(test_file)
    probs = classifier_proba(clf, f.features)
    names = clf.class_names
    return [{"split": "test", "path": p, "true": names[int(y)], "predicted": names[int(np.argmax(row))],
             "probabilities": dict(zip(names, map(float, row)))}
            for p, y, row in zip(f.paths, f.labels, probs)]


def worst_grid(rows: list[dict], data_root: str, path: str, size: int = 160) -> bool:
    """Draw the misclassified images with true class and probabilities; False if none."""
    from features.decode import decode_image

    if not rows:
        return False
    cols = min(4, len(rows))
    lines = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(lines, cols, figsize=(3.0 * cols, 3.3 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        try:
            ax.imshow(decode_image(os.path.join(data_root, row["path"]), size))
        except Exception:  # noqa: BLE001 - a vanished file still gets its caption
            ax.text(0.5, 0.5, "image unavailable", ha="center", va="center")
        p = row["probabilities"][row["predicted"]]
        ax.set_title(f"{os.path.basename(row['path'])}\ntrue {row['true']}, "
                     f"said {row['predicted']} ({100 * p:.0f}%)", fontsize=9, color="firebrick")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _sections(result, worst_label: str, worst_png: str | None) -> list[tuple[str, list]]:
    """Return (title, blocks) where a block is ('table', headers, rows), ('text', str) or ('img', path, alt)."""
    ex, tr, ft = result.stages["extract"], result.stages["train"], result.stages["finetune"]
    data_rows = [[s, v["images"], len(v["quarantined"]), v["computed"], v["reused"]]
                 for s, v in ex["splits"].items()]
    quarantined = [f"{s}: {p} ({why})" for s, v in ex["splits"].items() for p, why in v["quarantined"]]
    top = result.leaderboard[0] if result.leaderboard else None
    summary = (f"Best by validation accuracy: {top['model']}, {_pct(top['val_accuracy'])} validation, "
               f"{_pct(top['test_accuracy'])} test." if top else "No model trained.")
    out = [("Summary", [("text", summary)]), ("Dataset", [("text", f"{result.config['data']}: {len(ex['classes'])} classes "
                                 f"({', '.join(ex['classes'])})."),
                        ("table", ["split", "images", "quarantined", "features computed", "from cache"], data_rows)]
            + ([("text", "Quarantined: " + "; ".join(quarantined[:20]))] if quarantined else [])),
           ("Extractor", [("table", ["field", "value"],
                           [[k, str(v)] for k, v in ex["extractor"].items() if v is not None]),
                          ("text", f"extractor key {ex['extractor_key']}")])]
    board = [[i + 1, r["model"], _pct(r["val_accuracy"]), _pct(r["test_accuracy"]),
              "-" if r["fit_seconds"] is None else f"{r['fit_seconds']:.1f}"]
             for i, r in enumerate(result.leaderboard)]
    out.append(("Leaderboard", [("table", ["rank", "model", "val acc", "test acc", "fit s"], board)]))
    figures = []
    for name, t in tr.items():
        if os.path.isfile(os.path.join(t["folder"], "curves.png")):
            figures.append(("img", os.path.join(t["folder"], "curves.png"), f"{name}: training curves"))
    if "folder" in ft:
        figures.append(("img", os.path.join(ft["folder"], "curves.png"), "fine-tuning curves"))
    out.append(("Training curves (faint: raw, solid: smoothed)", figures or [("text", "no Keras model trained")]))
    confusions = []
    best = next((r for r in result.leaderboard if r["kind"] == "classifier"), None)
    for label, folder in ((best and best["model"], best and best["folder"]), ("fine-tuned", ft.get("folder"))):
        png = folder and os.path.join(folder, "confusion_test.png")
        if png and os.path.isfile(png):
            confusions.append(("img", png, f"{label}: test confusion matrix"))
    out.append(("Confusion matrices (test)", confusions or [("text", "no test split")]))
    if worst_png:
        out.append((f"Most confident mistakes on test ({worst_label})", [("img", worst_png, "worst misclassified")]))
    timing = [["extract", f"{ex['seconds']:.1f}",
               "network never built: every row from cache" if not ex["model_built"]
               else f"{ex['forward_images']} images through the network"]]
    for name, t in tr.items():
        timing.append([f"train {name}", f"{t['seconds']:.1f}", "reused (same options, same features)"
                       if t["reused"] else "trained"])
    if "folder" in ft:
        cache = ft["metrics"].get("cache_frozen")
        how = "reused (same head, same settings)" if ft["reused"] else "fine-tuned"
        if cache and not ft["reused"]:
            how += f"; frozen part: {cache['rows_computed']} rows computed, {cache['rows_reused']} from cache"
        timing.append(["fine-tune", f"{ft['seconds']:.1f}", how])
    else:
        timing.append(["fine-tune", "-", f"skipped: {ft['skipped']}"])
    out.append(("Time per stage", [("table", ["stage", "seconds", "cache"], timing)]))
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


def _inline(path: str) -> str:
    with open(path, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode("ascii")


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
                f"<figure><img src='{_inline(b[1])}' alt='{html.escape(b[2])}'>"
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
    png = os.path.join(result.folder, "worst_test.png")
    drawn = worst_grid(rows, os.path.abspath(result.config["data"]), png)
    sections = _sections(result, label, png if drawn else None)
    md = _md(sections).replace(result.folder + os.sep, "")  # relative image links
    with atomic_open(os.path.join(result.folder, "report.md")) as handle:
        handle.write(md)
    path = os.path.join(result.folder, "report.html")
    with atomic_open(path) as handle:
        handle.write(_html(sections))
    return path
