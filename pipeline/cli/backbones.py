"""``bneck backbones``: every backbone with what helps choosing one, as a table or JSON, and measured here.

Published ImageNet top-1 (Keras' figure), parameters and multiply-adds at the default
size (counted from the graph), whether the ImageNet weights are on this machine, and
with ``--measure`` the images per second each installed runtime reaches on this CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from bneck.core.progress import format_table
from bneck.features.backbones.registry import BACKBONES, Backbone, get_backbone

EPILOG = """examples:
  bneck backbones                                   # the table
  bneck backbones --json > backbones.json           # one object per backbone
  bneck backbones --measure mobilenetv3small convnexttiny   # images/s on this CPU, per runtime"""


def add_parser(sub) -> None:
    """Register ``bneck backbones``."""
    b = sub.add_parser(
        "backbones",
        help="list the backbones: accuracy, cost, local weights; --measure their speed here",
        description="List every backbone (every keras.applications constructor): published ImageNet "
        "top-1, parameters, multiply-adds at its default size, default input size and layer, the "
        "stage-3 unfreeze point, and whether its ImageNet weights file is here (`bneck weights`).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--json", action="store_true", help="print a JSON list, one object per backbone")
    b.add_argument(
        "--measure",
        nargs="*",
        metavar="NAME",
        default=None,
        help="measure images per second on this CPU for these backbones (random weights, default size, "
        "every installed runtime); none named: the smallest of each family",
    )
    b.add_argument(
        "--runtime",
        action="append",
        metavar="NAME",
        default=None,
        help="with --measure: only this runtime (repeatable; default: every installed one)",
    )
    b.set_defaults(run=run_backbones)


def weights_here(backbone: Backbone) -> list:
    """The alphas (or [None]) whose official ImageNet file is on this machine (``weights_store``)."""
    from bneck.features.backbones.weights_store import find_imagenet

    found = []
    for alpha in backbone.alphas or (None,):
        name = backbone.weights_file(alpha, backbone.default_size)
        if name and find_imagenet(name):
            found.append(alpha)
    return found


def describe(backbone: Backbone) -> dict:
    """One backbone as the JSON object ``--json`` prints."""
    return {
        "name": backbone.name,
        "keras_constructor": backbone.constructor,
        "family": backbone.family,
        "imagenet_top1": backbone.top1,
        "parameters": backbone.parameters,
        "multiply_adds": backbone.multiply_adds,
        "default_size": backbone.default_size,
        "min_size": backbone.min_size,
        "preprocessing": backbone.preprocessing,
        "default_layer": backbone.default_layer,
        "cut_points": list(backbone.cut_points),
        "unfreeze_from": backbone.unfreeze_from,
        "unfreeze_points": list(backbone.unfreeze_points),
        "alphas": list(backbone.alphas),
        "weights_file": backbone.weights_file(backbone.default_alpha, backbone.default_size),
        "weights_here": bool(weights_here(backbone)),
        "weights_here_alphas": [a for a in weights_here(backbone) if a is not None],
    }


def _row(b: Backbone) -> list:
    here = weights_here(b)
    where = (f"alpha {', '.join(map(str, here))}" if here else "no") if b.alphas else ("yes" if here else "no")
    return [
        b.name,
        f"{b.top1:.1%}" if b.top1 else "-",
        f"{b.parameters / 1e6:.1f}M",
        f"{b.multiply_adds / 1e9:.2f}G",
        b.default_size,
        b.default_layer,
        b.unfreeze_from,
        where,
    ]


def smallest_of_each_family() -> list[str]:
    """The backbone with the fewest parameters of each keras.applications module."""
    smallest: dict[str, Backbone] = {}
    for b in BACKBONES.values():
        if b.family not in smallest or b.parameters < smallest[b.family].parameters:
            smallest[b.family] = b
    return sorted(b.name for b in smallest.values())


def run_backbones(args: argparse.Namespace) -> int:
    """Print the table, the JSON list or the measurements; returns 0."""
    if args.measure is not None:
        names = args.measure or smallest_of_each_family()
        for name in names:
            get_backbone(name)  # refuse a wrong name before measuring anything
        return _print_measurements(names, _runtimes(args.runtime), as_json=args.json)
    if args.json:
        print(json.dumps([describe(b) for b in BACKBONES.values()], indent=1))
        return 0
    headers = ["backbone", "top-1", "params", "mult-adds", "size", "default layer", "unfreeze from", "weights here"]
    print(format_table(headers, [_row(b) for b in sorted(BACKBONES.values(), key=lambda b: b.name)]))
    from bneck.features.backbones.weights_store import weights_folders
    from bneck.features.runtimes.cpu import capabilities

    print(
        f"\ntop-1: ImageNet, as Keras publishes it; mult-adds at the default size. Weights are looked up in "
        f"{' then '.join(weights_folders())} (official Keras file names; `bneck weights add FILE` adds one); "
        "missing ones are downloaded on first use. Which to pick: docs/backbones.md."
    )
    print(format_table(["", "this CPU"], [list(line) for line in capabilities()]))
    return 0


def measure(name: str, runtime: str, batch: int = 16, seconds: float = 3.0) -> float:
    """Images per second of ``runtime`` for backbone ``name`` (random weights, default size) on this CPU."""
    import numpy as np

    from bneck.features.backbones.resolve import resolve_spec
    from bneck.features.runtimes.registry import BuildContext, build_model

    spec = resolve_spec(name, weights="none", pool="avg")
    images = np.random.default_rng(0).integers(0, 256, (batch, spec.input_size, spec.input_size, 3), np.uint8)
    with tempfile.TemporaryDirectory(prefix="bneck-measure-") as cache:
        # a runtime other than the reference is checked against it first, on these images
        context = BuildContext(cache_dir=cache, verbose=False, sample=lambda: images)
        model = build_model(runtime, spec, context)
        model(images)
        done, start = 0, time.perf_counter()
        while done == 0 or time.perf_counter() - start < seconds:
            model(images)
            done += batch
        return done / (time.perf_counter() - start)


def _runtimes(asked: list[str] | None) -> list[str]:
    """The runtimes to measure: those asked for (each checked), or every installed one."""
    from bneck.features.runtimes.registry import known_runtime, list_runtimes

    if asked:
        return [known_runtime(name, allow_auto=False) for name in asked]
    return [r["name"] for r in list_runtimes() if r["available"]]


def _print_measurements(names: list[str], runtimes: list[str], as_json: bool) -> int:
    from bneck.core.errors import BneckError

    results = []
    for name in names:
        for runtime in runtimes:
            try:
                rate, why = round(measure(name, runtime), 1), ""
            except BneckError as exc:
                rate, why = None, str(exc).split(". ")[0]
            results.append({"name": name, "runtime": runtime, "images_per_second": rate, "why_not": why})
            if not as_json:
                print(f"{name:20s} {runtime:12s} {rate if rate is not None else why}", flush=True)
    if as_json:
        print(json.dumps(results, indent=1))
    return 0
