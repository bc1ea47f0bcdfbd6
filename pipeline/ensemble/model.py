"""A loaded ensemble: its members, each loaded with every check of its own folder, and their weights.

A member is found at its recorded path relative to the ensemble's folder and taken only when
its manifest's sha256 is the one recorded (so its every file is too: ``read_verified``), its kind
is the recorded one (never an ensemble), and its classes and extractor are the ensemble's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bneck.pipeline.ensemble.selection import combine
from bneck.pipeline.manifests import ArtifactError, EnsembleManifest


@dataclass
class EnsembleModel:
    """Members (name, loaded model folder, integer weight), in the manifest's order."""

    members: list[tuple[str, Any, int]]

    @property
    def weights(self) -> list[int]:
        return [w for _, _, w in self.members]

    @property
    def takes_features(self) -> bool:
        """Whether every member takes features (no fine-tuned member, which takes images)."""
        return all(m.kind != "finetuned" for _, m, _ in self.members)

    @property
    def needs_base(self) -> bool:
        """Whether some member takes features, so the base's weights are needed to compute them."""
        return any(m.kind != "finetuned" for _, m, _ in self.members)

    def mean(self, probabilities: list[np.ndarray]) -> np.ndarray:
        """The members' probabilities (in member order) combined with their weights."""
        return combine(probabilities, self.weights)


def load_members(folder: str, manifest: EnsembleManifest, load: Callable[[str], Any]) -> EnsembleModel:
    """Load each member of the ensemble in ``folder`` with ``load`` (a folder -> LoadedClassifier that
    verifies it); raises ArtifactError naming the member that is missing or differs."""
    members = []
    here = os.path.realpath(folder)  # member paths were written relative to the ensemble's real place
    for ref in manifest.members:
        path = os.path.normpath(os.path.join(here, ref.folder))
        if not os.path.isdir(path):
            then = os.path.normpath(os.path.join(manifest.made_in, ref.folder))
            raise ArtifactError(
                f"{folder}: its member {ref.name} ({ref.kind}, manifest sha256 {ref.manifest_sha256[:12]}...) is "
                f"not at {path}. When the ensemble was made (in {manifest.made_in}) the member was at {then}. An "
                "ensemble refers to its members' folders; keep them where they were beside it (move a run folder "
                "whole), or make the ensemble again with `bneck ensemble MODEL_DIR... --out DIR`."
            )
        try:
            loaded = load(path)
        except ArtifactError as exc:
            raise ArtifactError(f"{folder}: its member {ref.name} is refused: {exc}") from None
        why = (
            f"its manifest's sha256 is {loaded.manifest_sha256[:12]}..., not the recorded {ref.manifest_sha256[:12]}..."
            if loaded.manifest_sha256 != ref.manifest_sha256
            else f"it is a {loaded.kind} model, not the recorded {ref.kind}"
            if loaded.kind != ref.kind
            else "its classes are not the ensemble's"
            if loaded.class_names != manifest.class_names
            else "its extractor is not the ensemble's"
            if loaded.manifest.extractor_key != manifest.extractor_key
            else ""
        )
        if why:
            raise ArtifactError(
                f"{folder}: its member {ref.name} at {path} is not the model it was made from: {why}. The member "
                "was changed or replaced after the ensemble was made, so nothing is loaded; make the ensemble "
                "again with `bneck ensemble MODEL_DIR... --out DIR`."
            )
        members.append((ref.name, loaded, ref.weight))
    return EnsembleModel(members)
