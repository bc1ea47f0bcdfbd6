"""``bneck weights``: which ImageNet weights files are on this machine, and ``add`` to bring more."""

from __future__ import annotations

import argparse

from bneck.core.progress import format_table

EPILOG = """examples:
  bneck weights                                   # where files are looked up, and which are here
  bneck weights add ~/Downloads/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5
  bneck weights add /shared/weights/              # every official file in a folder"""


def add_parser(sub) -> None:
    """Register ``weights`` and ``weights add``."""
    w = sub.add_parser(
        "weights",
        help="list the ImageNet weights files on this machine; `weights add FILE` adds one",
        description="`imagenet` weights are looked up under their official Keras file names in "
        "$KERAS_HOME/models (default ~/.keras/models), then in bneck's weights folder "
        "($BNECK_WEIGHTS, default ~/.local/share/bneck/weights). `bneck weights add` copies files "
        "there (private to you), so every bneck command finds them from any folder, offline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.set_defaults(run=run_list)
    actions = w.add_subparsers(dest="action", metavar="ACTION")
    a = actions.add_parser(
        "add",
        help="copy official ImageNet weights files (or the official files in folders) into bneck's folder",
        description="Copy each FILE (a folder: every official weights file in it) into bneck's weights "
        "folder. Each must carry its official Keras file name and match the hash Keras publishes for "
        "it where there is one; all are checked before any is copied.",
        epilog="example:\n  bneck weights add ../shared/data/weights   # then `bneck weights` lists them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("paths", nargs="+", metavar="FILE", help="weights files or folders holding them")
    a.set_defaults(run=run_add)


def run_list(args: argparse.Namespace) -> int:
    """Print the folders looked up and the official files found; returns 0."""
    from bneck.features.backbones.weights_store import official_files, weights_folders, weights_here

    files = official_files()
    rows = []
    for name, path in sorted(weights_here().items()):
        item = files[name]
        width = f" alpha {item.alpha}" if item.alpha else ""
        rows.append([f"{item.backbone.name}{width} {item.size} px", f"{item.top1:.1%}", path])
    print("looked up in, in order: " + "; ".join(weights_folders()))
    if rows:
        print(format_table(["backbone", "top-1", "file"], rows))
    else:
        print(
            "no official ImageNet weights file is on this machine: `bneck weights add FILE` adds one, "
            "or run online (each is downloaded into the first folder on first use)."
        )
    return 0


def run_add(args: argparse.Namespace) -> int:
    """Copy the files; returns 0."""
    from bneck.features.backbones.weights_store import add_weights, bneck_weights_dir

    done = add_weights(args.paths)
    for name, status in done:
        print(f"{status}: {name}")
    print(f"{len(done)} file(s) in {bneck_weights_dir()}" if done else "no official weights file found there")
    return 0
