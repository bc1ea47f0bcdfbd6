"""``bneck layers`` and ``bneck init`` (``bneck backbones`` is in ``backbones``): what there is, before any work."""

from __future__ import annotations

import argparse
import os

from bneck.core.progress import format_table
from bneck.features.backbones.model_file import backbone_from_options, with_graph
from bneck.pipeline.cli import backbones

LAYERS_EPILOG = """example:
  bneck layers mobilenetv2 --alpha 0.5      # then: bneck extract ... --layer block_13_expand_relu"""


def add_parsers(sub) -> None:
    """Register backbones, layers and init."""
    i = sub.add_parser(
        "init",
        help="write a commented config template for `bneck run`",
        description="Write CONFIG.toml: every key of every stage with its default and what it "
        "does. Edit it, then `bneck run CONFIG.toml`. An existing file is never "
        "overwritten.",
        epilog="example:\n  bneck init my_run.toml --data data/flowers && bneck run my_run.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("path", nargs="?", default="bneck.toml", metavar="CONFIG.toml", help="default: bneck.toml")
    i.add_argument("--data", default=None, metavar="DATA_DIR", help="the image folder to put in the template")
    i.add_argument("--out", default=None, metavar="RUN_DIR", help="the run folder to put in the template")
    i.set_defaults(run=run_init)
    backbones.add_parser(sub)
    p = sub.add_parser(
        "layers",
        help="list a backbone's layer names (for --layer and --unfreeze-from)",
        description="Build BACKBONE's architecture (random weights: nothing is read or "
        "downloaded) and list every layer with its output shape; the cut points, "
        "the default layer and the unfreeze points are marked.",
        epilog=LAYERS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "backbone", metavar="BACKBONE", help="a backbone name (`bneck backbones` lists them) or a .keras model file"
    )
    p.add_argument("--alpha", type=float, default=None, help="width multiplier (MobileNet, MobileNetV2)")
    p.add_argument("--size", type=int, default=None, help="input size in pixels (default: the backbone's)")
    p.set_defaults(run=run_layers)


def run_layers(args: argparse.Namespace) -> int:
    """Print the backbone's layers with output shapes and marks; returns 0."""
    from bneck.core.tfimport import import_tensorflow

    backbone = backbone_from_options(args.backbone)
    alpha = backbone.resolve_alpha(args.alpha)
    size = backbone.validate_size(args.size if args.size is not None else backbone.default_size)
    import_tensorflow()
    backbone = with_graph(backbone, size)  # a model file's cut and unfreeze points come from its graph
    base = backbone.build(None, size, alpha)
    marks = {name: "cut point" for name in backbone.cut_points}
    marks[backbone.default_layer] = "default --layer"
    marks[backbone.last_block] = "--unfreeze-from last-block"
    if backbone.measured_unfreeze_from:
        marks[backbone.measured_unfreeze_from] = "default --unfreeze-from"
    rows = [
        [i, layer.name, type(layer).__name__, str(tuple(layer.output.shape[1:])), marks.get(layer.name, "")]
        for i, layer in enumerate(base.layers)
    ]
    print(format_table(["#", "layer", "type", "output shape", ""], rows))
    name = getattr(backbone, "path", "") or backbone.name
    print(f"\n{len(rows)} layers in {name}{f' alpha {alpha}' if alpha else ''} at {size} px.")
    return 0


def run_init(args: argparse.Namespace) -> int:
    """Write the template; returns 0."""
    from bneck.core.atomic import atomic_open
    from bneck.core.errors import ConfigError
    from bneck.pipeline.runner.config import config_template, load_config, starting_backbone

    parent = os.path.dirname(os.path.abspath(args.path))
    if not os.path.isdir(parent):
        raise ConfigError(
            f"the folder of {args.path} does not exist or is not a folder ({parent}); create it "
            f"first or give another path. Received: path={args.path!r}."
        )
    if os.path.lexists(args.path):
        raise ConfigError(
            f"{args.path} already exists; `bneck init` never overwrites a file. Give another "
            f"path (`bneck init NEW.toml`) or delete it first. Received: path={args.path!r}."
        )
    if not args.path.endswith(".toml"):
        raise ConfigError(f"the config path must end in .toml. Received: path={args.path!r}.")
    # paths in a config are relative to the config file: what was typed here is relative to here
    extract = starting_backbone()
    text = config_template(*(os.path.abspath(p) if p else None for p in (args.data, args.out)), extract=extract)
    try:
        with atomic_open(args.path, encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise ConfigError(
            f"{args.path} cannot be written ({exc.strerror or exc}); give a path in a folder you can write to."
        ) from None
    load_config(args.path, data=args.data or ".")  # what it wrote reads back (data may still be unset)
    print(
        f"wrote {args.path}: edit it{'' if args.data else ' (set data = your image folder)'}, then "
        f"`bneck run {args.path}`\n" + " ".join(line.lstrip("# ") for line in extract[1])
    )
    return 0
