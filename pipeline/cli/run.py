"""``bneck run CONFIG.toml`` and ``bneck demo``: the whole experiment in one command."""

from __future__ import annotations

import argparse

from bneck.pipeline.cli.reporting import spent


def add_parsers(sub) -> None:
    """Register ``run`` and ``demo``."""
    p = sub.add_parser(
        "run",
        help="extract, train, fine-tune and report, from one config",
        description="Run extract -> train -> fine-tune the best Keras head -> "
        "report from a TOML config; every stage reuses its cache. "
        "Example: scripts/configs/reference.toml.",
    )
    p.add_argument("config", metavar="CONFIG.toml", nargs="?", default=None)
    _common(p)
    p.set_defaults(run=run_command)

    d = sub.add_parser(
        "demo",
        help="the reference cats-vs-dogs experiment, end to end",
        description="Download the cats_and_dogs_filtered split (2,000 train / "
        "1,000 validation images, checked by size and sha256) and "
        "VGG16 ImageNet weights, then `bneck run` with the reference "
        "settings. Offline, pass --data and the backbone options.",
    )
    d.add_argument("--backbone", default=None, help="default vgg16")
    d.add_argument("--alpha", type=float, default=None)
    d.add_argument("--size", type=int, default=None)
    d.add_argument("--weights", default=None, help="'imagenet' (default), 'none' or a weights file")
    _common(d)
    d.set_defaults(run=demo_command)


def _common(p) -> None:
    p.add_argument("--data", default=None, metavar="DATA_DIR", help="overrides `data`")
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="overrides `out`")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="override any config key, e.g. --set finetune.epochs=5 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true")


def _print(result) -> None:
    from bneck.core.progress import format_table
    from bneck.pipeline.training.leaderboard import describe_accuracy

    rows = [
        [r.name, describe_accuracy(r, "validation"), describe_accuracy(r, "test"), "reused" if r.reused else "made"]
        for r in result.leaderboard
    ]
    print(format_table(["model", "val acc [95% CI]", "test acc [95% CI]", "this run"], rows))
    if result.winner:
        print(result.winner)
    stages = result.stages
    ex = stages.extract
    print(
        f"extract: {ex.seconds:.1f} s, "
        + ("every row from cache" if not ex.model_built else f"{ex.forward_images} images through the network")
        + (f"; runtime {ex.runtime} ({ex.runtime_why})" if ex.model_built and ex.runtime else "")
    )
    for r in stages.train + ([stages.finetune] if stages.finetune else []):
        if not r.reused:
            print(f"{r.name}: made because {r.why}")
    reused = [r.name for r in stages.train if r.reused]
    print(f"train: {stages.train_seconds:.1f} s" + (f" (reused: {', '.join(reused)})" if reused else ""))
    ft = stages.finetune
    print(
        f"fine-tune: {spent(ft.folder, ft.fit_seconds, ft.reused)}"
        if ft
        else f"fine-tune: {stages.finetune_skipped}"
        if stages.finetune_kept_head
        else f"fine-tune: skipped ({stages.finetune_skipped})"
    )
    ens = stages.ensemble
    members = " + ".join(f"{w} x {name}" for name, w in stages.ensemble_members.items())
    print(
        f"ensemble: {spent(ens.folder, stages.ensemble_seconds, ens.reused)}, {members}: "
        f"{stages.ensemble_why}" + (f"; against {ens.versus}, test: {ens.gain.describe()}" if ens.gain else "")
        if ens
        else f"ensemble: none ({stages.ensemble_note})"
    )
    print(f"report: {result.report}")
    if result.leaderboard:
        import shlex

        from bneck.pipeline.runner.insight import best_exportable

        best, deployable = result.leaderboard[0], best_exportable(result.leaderboard)
        chosen = deployable or best  # predict and export the same model: the one you would deploy
        print(f"next: bneck predict {shlex.quote(chosen.folder)} IMAGES...")
        if deployable is not None:
            print(
                f"      bneck export {shlex.quote(deployable.folder)} --out "
                f"{shlex.quote(result.folder + '/export')} --format onnx"
            )
        if chosen is not best:
            print(
                f"      ({best.name}, first on validation, does not export; {chosen.name} is the best model that "
                f"does. To classify with {best.name} here: bneck predict {shlex.quote(best.folder)} IMAGES...)"
            )


def run_command(args: argparse.Namespace) -> int:
    from bneck.pipeline.runner.compose import run

    result = run(args.config, overrides=args.set, verbose=not args.quiet, data=args.data, out=args.out, seed=args.seed)
    _print(result)
    return 0


def demo_command(args: argparse.Namespace) -> int:
    from bneck.pipeline.runner.demo import demo

    result = demo(
        data=args.data,
        out=args.out,
        backbone=args.backbone,
        alpha=args.alpha,
        size=args.size,
        weights=args.weights,
        overrides=args.set,
        seed=args.seed,
        verbose=not args.quiet,
    )
    _print(result)
    return 0
