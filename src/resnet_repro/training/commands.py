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


def cmd_train_pack(args):
    from resnet_repro.training.pack import run_pack

    members = [(out, overrides, attempts_log) for out, overrides, attempts_log, _ in args.run]
    logs = [log for *_, log in args.run]
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return run_pack(members, logs, args.threads, args.attempt, uri, args.experiment, args.mps)


def add_train_pack(sub):
    s = sub.add_parser(
        "train-pack",
        help="several CIFAR trainings side by side on one GPU (config resources.cifar.per_gpu)",
        description="Starts one `resnet-repro train --resume` per --run, each printing to its LOG, under a "
        "CUDA MPS daemon private to this job where nvidia-cuda-mps-control exists (--mps auto), and waits "
        "for all. Exit status 0 if every training finished, 3 if those that did not were stopped by a "
        "signal after a checkpoint, else 1.",
    )
    s.add_argument(
        "--run",
        nargs=4,
        action="append",
        required=True,
        metavar=("OUT", "OVERRIDES", "ATTEMPTS_LOG", "LOG"),
        help="a training: its output directory, its spec overrides (JSON), the log of all its attempts, "
        "the log of this attempt",
    )
    s.add_argument("--threads", type=int, default=1, help="CPU threads in all, shared out evenly (default 1)")
    s.add_argument("--tracking-uri", help="as for `train`")
    s.add_argument("--experiment", help="as for `train`")
    s.add_argument(
        "--mps", choices=["auto", "on", "off"], default="auto", help="a job-private MPS daemon (default auto)"
    )
    add_attempt_arg(s)
    s.set_defaults(func=cmd_train_pack)


# sub-command: its parser (cli.COMMANDS lists them in order)
PARSERS = {"train": add_train, "train-pack": add_train_pack}
