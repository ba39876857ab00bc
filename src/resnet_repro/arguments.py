"""The argparse helpers every stage's command line shares (argparse only: nothing heavy imported)."""

import argparse


def csv_ints(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_attempt_arg(p):
    p.add_argument(
        "--attempt",
        type=int,
        metavar="N",
        help="the workflow's attempt number: print a header line naming it (and the Slurm job) first, "
        "so a log appended to by every attempt shows where each begins",
    )


def set_threads(args):
    """CPU threads for PyTorch, if the command was given --threads."""
    if getattr(args, "threads", None):
        from resnet_repro.device import set_threads as torch_threads

        torch_threads(args.threads)
