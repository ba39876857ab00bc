"""The `train` sub-command: argparse only (the trainer, torch, is imported when it runs)."""

import json
import os

from resnet_repro.arguments import add_attempt_arg, set_threads
from resnet_repro.spec.commands import add_spec_args, spec_from_args


def cmd_train(args):
    from resnet_repro.training.loop import train

    spec = spec_from_args(args)
    set_threads(args)
    from resnet_repro.tracking.store import experiment_arg

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    metrics = train(
        spec, args.out, resume=args.resume, stop_at=args.stop_at, tracking=(uri, experiment_arg(args.experiment))
    )
    if metrics is not None:  # None on torchrun's processes other than 0
        print(json.dumps(metrics, indent=2))


def add_train(sub):
    s = sub.add_parser(
        "train",
        help="train one network",
        description="Iteration-based SGD with the paper's schedule. Writes OUT/spec.yaml, "
        "OUT/checkpoint.pt (atomically, every K iterations and at the end; for --resume), "
        "OUT/history.csv (every K iterations: train/test error in %%, loss, lr), and at the "
        "end OUT/model.pt (the final model) and OUT/metrics.json. "
        "On SIGTERM/SIGUSR1 it checkpoints and exits with status 3.",
    )
    add_spec_args(s)
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    s.add_argument("--stop-at", type=int, help="checkpoint and stop after this iteration (exit status 3)")
    s.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice)")
    s.add_argument(
        "--tracking-uri",
        help="an http(s) MLflow tracking server logs the run live while it trains "
        "(default: $MLFLOW_TRACKING_URI; a SQLite store is logged after the fact "
        "by `resnet-repro track train`)",
    )
    s.add_argument(
        "--experiment", help="MLflow experiment of a live run (default: $MLFLOW_EXPERIMENT_NAME, else 'resnet-repro')"
    )
    add_attempt_arg(s)
    s.add_argument(
        "--attempts-log",
        metavar="FILE",
        help="also append everything this command prints to FILE (a log that keeps every attempt of a training)",
    )
    s.set_defaults(func=cmd_train)


# sub-command: its parser (cli.COMMANDS lists them in order)
PARSERS = {"train": add_train}
