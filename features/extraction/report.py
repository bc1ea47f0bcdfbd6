"""What an extraction did, per split and in all: counts, what was left out, and the summary a person reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from bneck.core.progress import format_table
from bneck.features.backbones.spec import ExtractorSpec


@dataclass
class SplitReport:
    """What happened to one split."""

    split: str
    images: int
    classes: int
    quarantined: int
    reused: int
    computed: int
    seconds: float
    file: str
    quarantine: list = field(default_factory=list)
    file_unchanged: bool = False  # the existing file already held exactly these rows
    shards: dict | None = None  # --engine ray: shards in all, run now, reused from earlier runs


@dataclass
class ExtractionReport:
    """What ``extract`` did: per-split counts and how often the network ran."""

    spec: ExtractorSpec
    out_dir: str
    cache_dir: str
    splits: list[SplitReport] = field(default_factory=list)
    forward_images: int = 0
    forward_calls: int = 0
    model_built: bool = False
    runtime: str = "tensorflow"
    runtime_why: str = ""  # how --runtime auto decided, or 'asked for'
    engine: str = "local"
    retries: int = 0  # --engine ray: shard attempts that failed and were retried
    worker_peak_rss_mb: float = 0.0  # --engine ray: the largest actor's peak resident memory
    nodes: dict = field(default_factory=dict)  # --engine ray: shards finished per Ray node id
    cache_dropped: int | None = -1  # --no-keep-cache: bytes freed (None: in use, kept; -2: read-only); -1: kept
    precision: str = "fp32"
    converted: bool | None = None  # openvino: whether the model had to be converted
    quantized: bool | None = None  # int8: whether the model had to be quantised
    quantization: dict | None = None  # int8: the cosine check against fp32, and the gate
    duplicates: list = field(default_factory=list)  # images whose bytes appear in more than one split

    def table(self) -> str:
        """Return the summary table a person reads at the end of a run."""
        rows = [
            [s.split, s.images, s.classes, s.quarantined, s.reused, s.computed, round(s.seconds, 2), s.file]
            for s in self.splits
        ]
        return format_table(
            ["split", "images", "classes", "quarantined", "reused", "computed", "seconds", "file"], rows
        )

    def summary(self, limit: int = 20) -> str:
        """Return what a person reads at the end: the table, then every file left out and why
        (the first ``limit``), and images whose bytes appear in two splits."""
        lines = [self.table()]
        quarantined = [(s.split, p, why) for s in self.splits for p, why in s.quarantine]
        if quarantined:
            lines += ["", f"quarantined ({len(quarantined)}):"]
            lines += [f"  {split}: {path}: {why}" for split, path, why in quarantined[:limit]]
            if len(quarantined) > limit:
                lines.append(f"  ... and {len(quarantined) - limit} more (listed in each file's 'quarantine' dataset)")
        if self.duplicates:
            lines += [
                "",
                f"{len(self.duplicates)} image(s) appear in more than one split (the same bytes), which "
                "makes validation and test accuracy look better than it is; remove one copy of each:",
            ]
            lines += [
                "  " + " = ".join(p for paths in d["paths"].values() for p in paths) for d in self.duplicates[:limit]
            ]
            if len(self.duplicates) > limit:
                lines.append(
                    f"  ... and {len(self.duplicates) - limit} more (listed in each file's cross_split_duplicates)"
                )
        return "\n".join(lines)
