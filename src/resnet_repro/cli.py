"""The `resnet-repro` command: every step of the pipeline is one sub-command, registered by its stage's
commands module (argparse only: a command imports its stage's code when it runs, so building the parser,
which every job does first, stays light)."""

import argparse
import importlib
import os
import socket
import sys
import time

from resnet_repro.errors import ReproError

# (sub-command, the stage module that registers it), in the order `resnet-repro --help` lists them
COMMANDS = (
    ("models", "spec.commands"),
    ("spec", "spec.commands"),
    ("train", "training.commands"),
    ("train-pack", "training.commands"),
    ("check-data", "data.commands"),
    ("evaluate", "evaluation.commands"),
    ("ensemble", "evaluation.commands"),
    ("responses", "evaluation.commands"),
    ("make-imagefolder", "data.commands"),
    ("figure", "report.commands"),
    ("table", "report.commands"),
    ("track", "tracking.commands"),
    ("report", "report.commands"),
    ("estimate", "preflight.commands"),
    ("doctor", "preflight.commands"),
)


def attempt_header(args, environ=None):
    """'=== resnet-repro train: attempt 2, Slurm job 1234 on node7, 2026-01-01T12:00:00 ===', or None
    without --attempt, or on torchrun's processes other than 0."""
    environ = os.environ if environ is None else environ
    if getattr(args, "attempt", None) is None or environ.get("RANK", "0") != "0":
        return None
    job = environ.get("SLURM_JOB_ID")
    where = f"Slurm job {job}" if job else "no Slurm job"
    restarts = environ.get("SLURM_RESTART_COUNT")
    if job and restarts and restarts != "0":
        where += f" (requeued {restarts}x)"
    return (
        f"=== resnet-repro {args.command}: attempt {args.attempt}, {where} on {socket.gethostname()}, "
        f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ==="
    )


class _Tee:
    """A text stream that writes to `stream` and appends to `log` too."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def append_log(path):
    """From now on, copy this process's stdout and stderr to the end of `path` (Snakemake deletes a
    job's declared log before each attempt; this file keeps every attempt)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    log = open(path, "a", buffering=1)
    sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)


def build_parser():
    p = argparse.ArgumentParser(
        prog="resnet-repro",
        description="Reproduce He et al., Deep Residual Learning for "
        "Image Recognition (CVPR 2016): models, data, training, evaluation, analysis.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS:
        importlib.import_module(f"resnet_repro.{module}").PARSERS[name](sub)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "attempts_log", None):
        append_log(args.attempts_log)
    header = attempt_header(args)
    if header:
        print(header, file=sys.stderr, flush=True)
    try:
        status = args.func(args)  # a command's own exit status (train-pack), or None
    except ReproError as e:
        from resnet_repro.training.loop import Interrupted

        print(f"resnet-repro: error: {e}", file=sys.stderr)
        return 3 if isinstance(e, Interrupted) else 2
    except KeyboardInterrupt:
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
