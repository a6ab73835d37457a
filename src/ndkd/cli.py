"""The ``ndkd`` command: the four verbs of the pipeline plus ``run``, which chains them.

Every command takes a YAML config and optional dotted overrides (``train.epochs=5``). Errors are one
line on stderr and a non-zero exit (2 for a bad config or command line, 1 otherwise); ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ndkd import __version__
from ndkd.errors import ConfigError, NdkdError

logger = logging.getLogger("ndkd")

_COMMON = """
Overrides are dotted KEY=VALUE pairs applied on top of the config file, e.g.
  train.epochs=5 distill.nd.weight=2 data.root=/data/fashion-mnist device=cpu
"""

_COMMANDS = {
    "train-teacher": (
        "train the teacher (cross-entropy) and export <output_dir>/<name>/teacher/teacher.pt",
        """examples:
  ndkd train-teacher configs/fashion_mnist/demo.yaml
  ndkd train-teacher configs/fashion_mnist/demo.yaml teacher.train.epochs=30 --restart""",
    ),
    "centers": (
        "compute the teacher's class-means on the training set (class_means.safetensors)",
        """examples:
  ndkd centers configs/fashion_mnist/demo.yaml
  ndkd centers configs/fashion_mnist/demo.yaml centers.augment=false --force
  ndkd centers import resnet56_cifar100.json --teacher resnet56     (convert an official KD++ JSON file;
                                                                      `ndkd centers import --help`)""",
    ),
    "distill": (
        "train the student(s) of a config with their distillation method (and ND)",
        """examples:
  ndkd distill configs/fashion_mnist/demo.yaml --student kdpp
  ndkd distill configs/fashion_mnist/demo.yaml --student kd train.epochs=10
  ndkd distill configs/fashion_mnist/demo.yaml --student kdpp --seeds 0,1,2""",
    ),
    "eval": (
        "evaluate a trained network on the test split",
        """examples:
  ndkd eval runs/fashion_mnist_demo/kdpp            (a run directory)
  ndkd eval configs/fashion_mnist/demo.yaml --weights runs/fashion_mnist_demo/kdpp/student.pt
  ndkd eval runs/fashion_mnist_demo/teacher --json""",
    ),
    "run": (
        "teacher -> class-means -> every student, skipping finished steps; prints a table of top-1",
        """examples:
  ndkd run configs/fashion_mnist/demo.yaml
  ndkd run configs/fashion_mnist/demo.yaml output_dir=/tmp/runs train.epochs=2
  ndkd run configs/fashion_mnist/ablation.yaml --seeds 0,1,2     (every student over 3 seeds, mean ± std)""",
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ndkd",
        description="Knowledge distillation with the ND loss of KD++ (feature norm and direction).",
        epilog="Run `ndkd COMMAND --help` for each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"ndkd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, examples) in _COMMANDS.items():
        sub = commands.add_parser(
            name, help=summary, description=summary + ".", epilog=_COMMON + "\n" + examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        target = "a run directory or a YAML config" if name == "eval" else "YAML config (a recipe)"
        sub.add_argument("config", metavar="RUN_DIR_OR_CONFIG" if name == "eval" else "CONFIG", help=target)
        sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
        sub.add_argument("--debug", action="store_true", help="show the full traceback on errors")
        sub.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
        if name in ("train-teacher", "distill", "run"):
            sub.add_argument("--restart", action="store_true", help="move an existing run aside (renamed, not deleted) and start again")
        if name == "distill":
            sub.add_argument("--student", action="append", metavar="NAME", help="student(s) of the config to train (default: all)")
        if name in ("distill", "run"):
            sub.add_argument(
                "--seeds", type=_seed_list, metavar="S,S,...",
                help="train every student once per seed, in <student>/seed<S>, with the one teacher and class-means; "
                "prints the mean ± std over the seeds",
            )  # fmt: skip
        if name == "centers":
            sub.add_argument("--force", action="store_true", help="recompute even if an up-to-date file exists")
        if name == "eval":
            sub.add_argument("--weights", help="weights file (when evaluating from a config)")
            sub.add_argument("--arch", help="architecture of --weights (default: student.arch of the config)")
            sub.add_argument("--json", action="store_true", help="print the metrics as JSON")
    models = commands.add_parser(
        "models", help="list every architecture (parameters, embedding width, stages, MFLOPs)",
        description="List every registered architecture with its parameters, embedding width, stage channels and "
        "MFLOPs at its native resolution (32x32 CIFAR, 224x224 ImageNet), or the stages of one.",
        epilog="""examples:
  ndkd models
  ndkd models --family imagenet
  ndkd models --features wrn_40_2            (stage names, module paths, pre-activations, shapes)
  ndkd models --features timm/resnet50 --json""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    models.add_argument("--features", metavar="NAME", help="show the feature stages of architecture NAME (any timm/<name> too)")
    models.add_argument("--family", choices=("cifar", "imagenet"), help="list one family only")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.add_argument("--debug", action="store_true", help="show the full traceback on errors")

    def tool(name: str, summary: str, epilog: str, json_help: str | None) -> argparse.ArgumentParser:
        """A sub-command that takes no config: ``--debug`` always, ``--json`` when it prints a listing."""
        sub = commands.add_parser(
            name, help=summary, description=summary + ".", epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        if json_help:
            sub.add_argument("--json", action="store_true", help=json_help)
        sub.add_argument("--debug", action="store_true", help="show the full traceback on errors")
        return sub

    tool(
        "methods", "list the distillation methods and ND variants with their options and defaults",
        "examples:\n  ndkd methods\n  ndkd methods --json", "print the list as JSON",
    )  # fmt: skip
    recipes = tool(
        "recipes", "list the shipped recipes: one row per student of every YAML config under DIR (paper tables, docs/recipes.md)",
        """examples:
  ndkd recipes                          (./configs, else the configs/ of the ndkd checkout)
  ndkd recipes configs/cifar100
  ndkd recipes configs/imagenet/resnet34_resnet18.yaml
  ndkd recipes --json                   (every field: options, milestones, claimed teacher top-1, source)
then train one: ndkd distill configs/cifar100/resnet56_resnet20.yaml --student kdpp""",
        "print the rows as a JSON list of objects",
    )  # fmt: skip
    recipes.add_argument("dir", nargs="?", metavar="DIR", help="folder of recipes (searched recursively) or one YAML file")
    report = tool(
        "report", "write report.md and PNG figures from finished runs: top-1 over seeds, curves, embedding norms and cosines "
        "(docs/reports.md)",
        """examples:
  ndkd report runs/fashion_mnist_demo                  (every run under it; writes runs/fashion_mnist_demo/report/)
  ndkd report runs/ablation --out /tmp/ablation_report
  ndkd report runs/exp_a runs/exp_b --no-embeddings    (tables and curves only: no model is run)""",
        None,
    )  # fmt: skip
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories or folders holding them (searched recursively)")
    report.add_argument("--out", metavar="DIR", help="where report.md and the figures go (default: <first RUN_DIR>/report)")
    report.add_argument("--no-embeddings", action="store_true", help="leave out the embedding norms and cosines (no test-set pass)")
    report.add_argument("--device", default="auto", help="device of the embedding pass: auto, cpu, cuda, cuda:N (default: auto)")
    return parser


def _centers_import_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ndkd centers import",
        description="Convert an official KD++ class-means JSON file ({\"<class>\": [D floats]}) into ndkd's "
        "safetensors format with metadata, after checking its width against the teacher's embedding.",
        epilog="""examples:
  ndkd centers import resnet56_cifar100.json --teacher resnet56
  ndkd centers import r34_imagenet.json --teacher torchvision/resnet34 --checkpoint resnet34.pth --out r34.safetensors
then point a config at it: distill.nd.class_means=r34.safetensors""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("file", metavar="FILE", help="the official JSON class-means file")
    parser.add_argument("--teacher", required=True, metavar="NAME", help="architecture of the teacher the means come from")
    parser.add_argument("--out", metavar="PATH", help="output file (default: FILE with the suffix .safetensors)")
    parser.add_argument("--checkpoint", metavar="WEIGHTS", help="the teacher's weights file: its hash is recorded and checked when distilling")
    parser.add_argument("--dataset", default="", help="dataset name recorded in the metadata (e.g. cifar100)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


def _seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2] (``--seeds``)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of distinct seeds >= 0 separated by commas (for example 0,1,2)")
    return seeds


def _is_main_process() -> bool:
    """Under torchrun only rank 0 reports results (every rank still reports its errors)."""
    return int(os.environ.get("RANK", "0")) == 0


def _say(text: object) -> None:
    if _is_main_process():
        print(text)


def _methods(args: argparse.Namespace) -> int:
    from ndkd.distillers.listing import format_method_listing, method_listing

    listing = method_listing()
    print(json.dumps(listing, indent=2) if args.json else format_method_listing(listing))
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from ndkd.recipes import format_recipes, list_recipes

    rows = list_recipes(args.dir)
    print(json.dumps([row.to_dict() for row in rows], indent=2) if args.json else format_recipes(rows))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ndkd.report import write_report

    print(write_report(args.run_dirs, args.out, embeddings=not args.no_embeddings, device=args.device))
    return 0


def _load(path: str, overrides: list[str]):
    from ndkd.config import load_config

    return load_config(path, overrides)


def _eval(args: argparse.Namespace) -> int:
    from ndkd.pipeline import evaluate_weights

    target = Path(args.config)
    if target.is_dir():
        summary_path = target / "summary.json"
        if not (target / "config.yaml").is_file() or not summary_path.is_file():
            raise ConfigError(f"{target} is not a finished run directory (no config.yaml and summary.json)")
        summary = json.loads(summary_path.read_text())
        config = _load(str(target / "config.yaml"), args.overrides)
        arch = args.arch or summary["arch"]
        weights = args.weights or str(target / summary["weights"])
    else:
        config = _load(args.config, args.overrides)
        if not args.weights:
            raise ConfigError("evaluating from a config needs --weights FILE (or pass a run directory instead)")
        arch, weights = args.arch or config.student.arch, args.weights
    metrics = evaluate_weights(config, arch, weights)
    if args.json:
        _say(json.dumps({"arch": arch, "weights": weights, **metrics}))
    else:
        _say(f"{arch} ({weights}): top-1 {metrics['top1']:.2f}  top-5 {metrics['top5']:.2f}  loss {metrics['loss']:.4f}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from ndkd.models.catalog import describe_all, describe_model, format_features, format_models

    if args.features:
        info = describe_model(args.features)
        print(json.dumps(info.to_dict()) if args.json else format_features(info))
        return 0
    infos = describe_all(args.family)
    if args.json:
        print(json.dumps([info.to_dict() for info in infos]))
        return 0
    print(format_models(infos))
    from ndkd.models.imagenet.timm_models import timm_available, timm_model_names

    if args.family is None:
        timm_line = f"{len(timm_model_names())} timm models" if timm_available() else "timm models (pip install 'ndkd[timm]')"
        print(f"\nalso: timm/<name> for any of the {timm_line}; `ndkd models --features timm/<name>` measures one")
    return 0


def _centers_import(args: argparse.Namespace) -> int:
    from ndkd.centers import import_official_class_means

    out = import_official_class_means(args.file, args.teacher, out=args.out, checkpoint=args.checkpoint, dataset=args.dataset)
    print(out)
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    from ndkd import pipeline

    if args.command == "eval":
        return _eval(args)
    if args.command == "models":
        return _models(args)
    if args.command == "centers-import":
        return _centers_import(args)
    if args.command == "methods":
        return _methods(args)
    if args.command == "recipes":
        return _recipes(args)
    if args.command == "report":
        return _report(args)
    config = _load(args.config, args.overrides)
    progress = not args.no_progress
    if args.command == "train-teacher":
        summary = pipeline.train_teacher(config, restart=args.restart, progress=progress)
        _say(f"teacher {summary['arch']}: test top-1 {summary['test_top1_last']:.2f} -> {pipeline.teacher_dir(config)}")
    elif args.command == "centers":
        _say(pipeline.compute_centers(config, force=args.force))
    elif args.command == "distill":
        run_dirs = []
        for name in args.student or pipeline.student_names(config):
            for seed in args.seeds or [None]:
                summary = pipeline.distill(config, name, seed=seed, restart=args.restart, progress=progress)
                run_dirs.append(pipeline.student_run_dir(config, name, seed))
                seeded = f", seed {seed}" if seed is not None else ""
                _say(f"{name} ({summary['arch']}{seeded}): test top-1 {summary['test_top1_last']:.2f} -> {run_dirs[-1]}")
        if args.seeds:
            _say_groups(run_dirs)
    elif args.command == "run":
        rows = pipeline.run_pipeline(config, seeds=args.seeds, restart=args.restart, progress=progress)
        _say(pipeline.format_table(rows))
        if args.seeds:
            _say_groups([row["run_dir"] for row in rows])
    return 0


def _say_groups(run_dirs: list) -> None:
    """The mean ± std over seeds of the runs just trained (one row per student)."""
    from ndkd.results import group_runs, group_table, read_run
    from ndkd.tables import format_text_table

    _say("\n" + format_text_table(group_table(group_runs([read_run(path) for path in run_dirs]))))


class _StderrHandler(logging.StreamHandler):
    """Log to whatever ``sys.stderr`` is at the time of the message (test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["centers", "import"]:  # `ndkd centers CONFIG` stays as it is; `import` is a sub-verb
        args = _centers_import_parser().parse_args(argv[2:])
        args.command = "centers-import"
    else:
        args = _parser().parse_args(argv)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if _is_main_process() else logging.WARNING)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("ndkd: interrupted; the last finished epoch is saved and the same command resumes from it", file=sys.stderr)
        return 130
    except NdkdError as error:
        if args.debug:
            raise
        print(f"ndkd: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    except Exception as error:  # a bug, not a user error: say so, keep the message short
        if args.debug:
            raise
        print(f"ndkd: internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
