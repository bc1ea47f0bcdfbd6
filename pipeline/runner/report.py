"""The run report: ``report.md`` and a self-contained ``report.html`` (images inlined).

Summary (the winner against the runner-up, paired), next steps (the exact predict and
export commands), dataset, extractor, the leaderboard with 95 % intervals, per-class
scores, training curves with over-fitting notes, every model's confusion matrix, data
health (quarantine, duplicates, near duplicates, likely label errors: ``health``), the
worst misclassified test images, and the time each stage took.

Nothing from outside reaches the report: a figure is inlined only from the bytes of
a model folder that passed its manifest check (``artifacts.read_verified``), and a
misclassified image is drawn only when its path resolves inside the data folder.
"""

from __future__ import annotations

import base64
import html
import os
import shlex
from urllib.parse import quote

from bneck.core.atomic import atomic_open
from bneck.pipeline.artifacts import ArtifactError, read_verified
from bneck.pipeline.runner.health import LABEL_ISSUES, data_health, write_label_issues
from bneck.pipeline.runner.insight import best_exportable, confusion_block, health_blocks, overfit_notes, per_class_rows
from bneck.pipeline.runner.thumbnails import thumbnail_grid, worst_grid, worst_misclassified
from bneck.pipeline.training.leaderboard import describe_accuracy

__all__ = ["thumbnail_grid", "worst_grid", "worst_misclassified", "write_report"]


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

    def files(self, folder) -> dict | None:
        """The verified files of ``folder`` (name -> bytes), None when it fails its check."""
        self.block(folder, "", "")
        verified = self._folders[folder]
        return None if isinstance(verified, ArtifactError) else verified.files


def _next_steps(result) -> list:
    """Where the best model is, and the exact commands to use it and to deploy it."""
    if not result.leaderboard:
        return [("text", "No model to use: see the stages below for what went wrong.")]
    best = result.leaderboard[0]
    steps = [
        ("text", f"The best model on validation is {best.name}: {best.folder}"),
        (
            "text",
            f"Classify new images: bneck predict {shlex.quote(best.folder)} IMAGE_OR_FOLDER... [--csv predictions.csv]",
        ),
    ]
    deployable = best_exportable(result.leaderboard)
    if deployable is not None:
        note = (
            ""
            if deployable is best
            else f" ({best.name} has members that are not layers; {deployable.name} is the best model that is, or "
            "make an ensemble of exportable members with `bneck ensemble`)"
            if best.kind == "ensemble"
            else f" ({best.name} is not expressible as layers; {deployable.name} is the best model that is)"
        )
        steps.append(
            (
                "text",
                f"Deploy without bneck: bneck export {shlex.quote(deployable.folder)} --out "
                f"{shlex.quote(os.path.join(result.folder, 'export'))} --format onnx (or keras, "
                f"savedmodel, tflite, openvino){note}",
            )
        )
    return steps


def _finetuning_verdict(ft, skipped: str) -> str:
    """One sentence: what fine-tuning gained over the best frozen model on test, and whether it counts."""
    if ft is None:
        return f"Fine-tuning: {skipped}." if skipped.startswith("kept the") else f"Fine-tuning: skipped ({skipped})."
    kept = ft.metrics.get("kept_epoch")
    start = "no fine-tuned epoch beat the head on validation, so the model is the head itself; " if kept == 0 else ""
    if ft.gain is None:
        return f"Fine-tuning: {start}no paired comparison on test ({ft.gain_note or 'no test split'})."
    return f"Fine-tuning: {start}{ft.name} against {ft.versus} on the same test images: {ft.gain.describe()}."


def _sections(result, worst_label: str, worst_png) -> list[tuple[str, list]]:
    """Return (title, blocks): ('table', headers, rows), ('text', str) or ('img', path, alt, png bytes)."""
    figures_of = _Figures()
    stages = result.stages
    ex, tr, ft = stages.extract, stages.train, stages.finetune
    data_rows = [[s, v["images"], len(v["quarantined"]), v["computed"], v["reused"]] for s, v in ex.splits.items()]
    quarantined = [[s, p, why] for s, v in ex.splits.items() for p, why in v["quarantined"]]
    out = [
        ("Summary", _summary_blocks(result)),
        ("Next steps", _next_steps(result)),
        (
            "Dataset",
            [
                ("text", f"{result.config['data']}: {len(ex.classes)} classes ({', '.join(ex.classes)})."),
                ("table", ["split", "images", "quarantined", "features computed", "from cache"], data_rows),
            ],
        ),
        (
            "Extractor",
            [
                ("table", ["field", "value"], [[k, str(v)] for k, v in ex.extractor.items() if v is not None]),
                ("text", f"extractor key {ex.extractor_key}"),
            ],
        ),
        ("Leaderboard", _leaderboard_blocks(result)),
    ]
    per_class = per_class_rows(result.leaderboard)
    if per_class:
        out.append(
            ("Per class (test)", [("table", ["model", "class", "precision", "recall", "F1", "support"], per_class)])
        )
    out.append(("Training curves (faint: raw, solid: smoothed)", _training_curve_blocks(figures_of, tr, ft)))
    confusions = confusion_block(result.leaderboard, ex.classes, result.folder)
    out.append(("Confusion matrices (test, every model)", [confusions] if confusions else [("text", "no test split")]))
    out.append(("Data health", _data_health_blocks(result, quarantined)))
    if worst_png:
        out.append(
            (
                f"Most confident mistakes on test ({worst_label})",
                [("img", os.path.join(result.folder, "worst_test.png"), "worst misclassified", worst_png)],
            )
        )
    out.append(("Time per stage", [("table", ["stage", "seconds", "why"], _timing_rows(stages))]))
    return out


def _summary_blocks(result) -> list:
    """The best model by validation accuracy with its intervals, then the paired verdict when there is one."""
    top = result.leaderboard[0] if result.leaderboard else None
    summary = (
        f"Best by validation accuracy: {top.name}, {describe_accuracy(top, 'validation')} validation, "
        f"{describe_accuracy(top, 'test')} test (95 % Wilson intervals)."
        if top
        else "No model trained."
    )
    return [("text", summary)] + ([("text", result.winner)] if result.winner else [])


def _leaderboard_blocks(result) -> list:
    """The leaderboard table with 95 % intervals, then the fine-tuning verdict."""
    board = [
        [i + 1, r.name, describe_accuracy(r, "validation"), describe_accuracy(r, "test"), f"{r.fit_seconds:.1f}"]
        for i, r in enumerate(result.leaderboard)
    ]
    return [
        ("table", ["rank", "model", "val acc [95% CI]", "test acc [95% CI]", "fit s"], board),
        ("text", _finetuning_verdict(result.stages.finetune, result.stages.finetune_skipped)),
        ("text", _ensemble_verdict(result.stages)),
    ]


def _ensemble_verdict(stages) -> str:
    """One sentence: what the ensemble is and what it added over the best single model on test."""
    ens = stages.ensemble
    if ens is None:
        return f"Ensemble: none ({stages.ensemble_note})."
    members = " + ".join(f"{w} x {name}" for name, w in stages.ensemble_members.items())
    chosen = (
        f"Ensemble of {members}, selected on validation ({stages.ensemble_why}; so its validation accuracy "
        "is optimistic, while test, read once after selection, is not)"
    )
    if ens.gain is None:
        return f"{chosen}: no paired comparison on test ({ens.gain_note})."
    return f"{chosen}: against {ens.versus}, the best single model, on the same test images: {ens.gain.describe()}."


def _training_curve_blocks(figures_of: _Figures, tr: list, ft) -> list:
    """The verified training-curve figures (or a note that there are none), then the over-fitting notes."""
    figures = [figures_of.block(r.folder, "curves.png", f"{r.name}: training curves") for r in tr]
    if ft is not None:
        figures.append(figures_of.block(ft.folder, "curves.png", "fine-tuning curves"))
    figures = [f for f in figures if f]
    notes = [("text", f"Over-fitting: {note}") for note in overfit_notes(tr + ([ft] if ft else []), figures_of.files)]
    return (figures or [("text", "no Keras model trained")]) + notes


def _data_health_blocks(result, quarantined: list) -> list:
    """Quarantine, duplicates, near duplicates and likely label errors, thumbnails drawn from the data folder."""
    data_root = os.path.abspath(result.config["data"])
    health = data_health(os.path.join(result.folder, "features"))
    write_label_issues(os.path.join(result.folder, LABEL_ISSUES), health.label_errors)
    return health_blocks(health, quarantined, lambda entries: thumbnail_grid(entries, data_root), result.folder)


def _timing_rows(stages) -> list:
    """One row per stage: its seconds and why it ran (or was reused, or skipped)."""
    ex, ft = stages.extract, stages.finetune
    timing = [
        [
            "extract",
            f"{ex.seconds:.1f}",
            "network never built: every row from cache"
            if not ex.model_built
            else f"{ex.forward_images} images through the network",
        ]
    ]
    for r in stages.train:
        timing.append(
            [
                f"train {r.name}",
                f"{r.fit_seconds:.1f}",
                "reused (same options, same features)" if r.reused else f"trained: {r.why}",
            ]
        )
    if ft is not None:
        cache = ft.metrics.get("cache_frozen")
        how = "reused (same head, same settings)" if ft.reused else f"fine-tuned: {ft.why}"
        if cache and not ft.reused:
            how += f"; frozen part: {cache['rows_computed']} rows computed, {cache['rows_reused']} from cache"
        timing.append(["fine-tune", f"{ft.fit_seconds:.1f}", how])
    else:
        timing.append(
            [
                "fine-tune",
                "-",
                stages.finetune_skipped if stages.finetune_kept_head else f"skipped: {stages.finetune_skipped}",
            ]
        )
    ens = stages.ensemble
    timing.append(
        [
            "ensemble",
            f"{stages.ensemble_seconds:.1f}",
            (
                "reused (same members, same settings)"
                if ens.reused
                else f"{ens.why}, from the members' saved predictions"
            )
            if ens
            else stages.ensemble_note,
        ]
    )
    return timing


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|!#"} | {"\n": " ", "\r": " "})


def _md_text(value) -> str:
    """Text as Markdown shows it literally: no table cell split by '|', no link, image or HTML tag made
    from a class or file name (``report.html`` escapes the same text as HTML)."""
    return str(value).translate(_MD_SPECIAL)


def _md(sections, folder: str) -> str:
    """The report as Markdown; images linked relative to the run ``folder`` (where report.md is)."""
    lines = ["# bneck run report", ""]
    for title, blocks in sections:
        lines += [f"## {_md_text(title)}", ""]
        for block in blocks:
            if block[0] == "text":
                lines += [_md_text(block[1]), ""]
            elif block[0] == "img":
                lines += [f"![{_md_text(block[2])}](<{quote(os.path.relpath(block[1], folder))}>)", ""]
            else:
                _, headers, rows = block
                lines += ["| " + " | ".join(map(_md_text, headers)) + " |", "|" + "---|" * len(headers)]
                lines += ["| " + " | ".join(_md_text(c) for c in row) + " |" for row in rows] + [""]
    return "\n".join(lines)


def _inline(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;
padding:.3em .7em;text-align:left;overflow-wrap:anywhere}th{background:#f4f4f4}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}p{line-height:1.45}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}figure{margin:0}
figcaption{color:#666;font-size:.9em}.summary{font-size:1.1em;background:#f6f8fa;padding:.6em 1em}
.next{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;background:#f3f7ee;padding:.4em .8em;
overflow-wrap:anywhere}.wide{overflow-x:auto;max-width:100%}
@media (max-width:900px){body{margin:1em auto}td,th{padding:.25em .45em}}"""


def _html_block(block, title: str) -> str:
    if block[0] == "text":
        css = " class='summary'" if title == "Summary" else " class='next'" if title == "Next steps" else ""
        return f"<p{css}>{html.escape(block[1])}</p>"
    _, headers, rows = block
    return (
        "<div class='wide'><table><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        + "</table></div>"
    )


def _html(sections) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>bneck run report</title>",
        f"<style>{STYLE}</style></head><body><h1>bneck run report</h1>",
    ]
    for title, blocks in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        i = 0
        while i < len(blocks):  # blocks in order; consecutive images side by side when they fit
            if blocks[i][0] == "img":
                images = []
                while i < len(blocks) and blocks[i][0] == "img":
                    images.append(blocks[i])
                    i += 1
                parts.append(
                    "<div class='row'>"
                    + "".join(
                        f"<figure><img src='{_inline(b[3])}' alt='{html.escape(b[2])}'>"
                        f"<figcaption>{html.escape(b[2])}</figcaption></figure>"
                        for b in images
                    )
                    + "</div>"
                )
            else:
                parts.append(_html_block(blocks[i], title))
                i += 1
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_linked_figures(sections, folder: str) -> None:
    """Write every figure of the report that belongs in the run folder (the confusion matrices, near
    duplicates, label errors; this run's, replacing an earlier run's): report.md links them, report.html
    inlines them."""
    root = os.path.realpath(folder)
    for _, blocks in sections:
        for block in blocks:
            if block[0] != "img" or not block[3]:
                continue
            if os.path.realpath(os.path.dirname(block[1])) == root:  # a link planted under the name is replaced
                with atomic_open(os.path.join(root, os.path.basename(block[1])), "wb") as handle:
                    handle.write(block[3])


def write_report(result, worst: int = 16) -> str:
    """Write ``report.md`` and ``report.html`` into the run folder; returns the HTML path."""
    label, rows = worst_misclassified(result, worst)
    png = worst_grid(rows, os.path.abspath(result.config["data"]))
    sections = _sections(result, label, png)
    _write_linked_figures(sections, result.folder)  # worst_test.png among them
    md = _md(sections, result.folder)
    with atomic_open(os.path.join(result.folder, "report.md")) as handle:
        handle.write(md)
    path = os.path.join(result.folder, "report.html")
    with atomic_open(path) as handle:
        handle.write(_html(sections))
    return path
