"""When stage 3 reuses a fine-tuned folder instead of fine-tuning again, and why it runs.

Cheapest first: the head it started from (by its manifest's sha256), the data root,
the options that decide the model; then the whole folder verified and its model checked.
"""

from __future__ import annotations

from bneck.pipeline.artifacts import check_model
from bneck.pipeline.reuse import Reuse, decide, options_changed, records_its_domain


def finetuned_reuse(folder: str, head_manifest_sha256: str, data_root: str, requested: dict) -> Reuse:
    """Return whether ``folder`` was fine-tuned from this head, on this data root, with ``requested``
    (``options.fingerprint`` of the checked options), and if not, why it must run."""

    def same_head(m):
        if getattr(m, "head", None) is None:
            return f"the folder holds a {m.kind} model, not a fine-tuned one"
        return None if m.head.manifest_sha256 == head_manifest_sha256 else "the head changed (its manifest differs)"

    def same_data(m):
        return None if m.data == data_root else f"data folder changed: {m.data} \u2192 {data_root}"

    def same_options(m):
        return options_changed(m.requested, requested)

    return decide(folder, [same_head, same_data, same_options, records_its_domain], check_model)
