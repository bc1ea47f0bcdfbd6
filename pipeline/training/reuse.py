"""When stage 2 reuses a classifier folder instead of training again, and why it trains.

Cheapest first: the recorded classifier and options, then the feature files by sha256,
then the whole folder verified and its model checked for safe loading.
"""

from __future__ import annotations

import os

from bneck.pipeline.artifacts import check_model
from bneck.pipeline.reuse import Reuse, decide, options_changed, records_its_domain


def classifier_reuse(out_dir: str, name: str, cfg: dict, feature_shas: dict[str, str], streamed: bool = False) -> Reuse:
    """Return whether ``out_dir/name`` holds ``name`` trained with ``cfg`` on feature files with these
    sha256s (``feature_shas``: split -> sha256), the same way (``streamed``: out of core, under
    --max-memory, which trains another model than in memory), and if not, why it must be trained."""

    def same_path(m):
        if bool(m.streamed) == streamed:
            return None
        return (
            "trained streamed (--max-memory) before, in memory now"
            if m.streamed
            else ("trained in memory before, streamed (--max-memory) now")
        )

    def same_classifier(m):
        return None if m.classifier == name else f"the folder holds {m.classifier!r}"

    def same_options(m):
        return options_changed(m.config, cfg)

    def same_features(m):
        recorded = {split: ref.sha256 for split, ref in m.feature_files.items()}
        if set(recorded) != set(feature_shas):
            return f"feature files changed: {', '.join(sorted(recorded))} \u2192 {', '.join(sorted(feature_shas))}"
        changed = [f"{split}.h5" for split in recorded if recorded[split] != feature_shas[split]]
        return f"feature file changed: {', '.join(changed)}" if changed else None

    return decide(
        os.path.join(out_dir, name),
        [same_classifier, same_options, same_path, same_features, records_its_domain],
        check_model,
    )
