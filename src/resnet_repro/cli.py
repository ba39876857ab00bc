"""The `resnet-repro` command: every step of the pipeline is one sub-command."""

import argparse
import json
import os
import sys

import yaml

from resnet_repro.errors import ReproError


def _csv_ints(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def cmd_models(args):
    from resnet_repro.models import canonical_models, describe_models

    names = args.names or canonical_models()
    rows = describe_models(names)
    if args.family:
        rows = [r for r in rows if r["family"] == args.family]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':<16} {'family':<9} {'depth':>5} {'shortcut':>8} {'params':>12} {'GFLOPs':>8}  input")
    for r in rows:
        print(
            f"{r['name']:<16} {r['family']:<9} {r['depth']:>5} {r['shortcut'] or '-':>8} "
            f"{r['params'] / 1e6:>11.3f}M {r['gflops']:>8.3f}  {r['input_size']}x{r['input_size']}"
        )


def _spec_from_args(args):
    from resnet_repro.spec.build import build_spec, parse_assignment

    flags = {}
    if args.model:
        flags["model"] = args.model
    data = {
        k: v
        for k, v in (
            ("kind", args.data),
            ("root", args.data_root),
            ("val_split", args.val_split),
            ("image_size", args.image_size),
        )
        if v is not None
    }
    if args.download:
        data["download"] = True
    if data:
        flags["data"] = data
    for key in (
        "max_iters",
        "batch_size",
        "lr",
        "seed",
        "log_every",
        "checkpoint_every",
        "checkpoint_minutes",
        "device",
        "precision",
    ):
        if getattr(args, key) is not None:
            flags[key] = getattr(args, key)
    if args.milestones is not None:
        flags["schedule"] = {"kind": "multistep", "milestones": args.milestones}
    if args.schedule is not None:
        flags.setdefault("schedule", {})["kind"] = args.schedule
    if args.no_warmup:
        flags["warmup"] = None
    extra = []
    if args.overrides:
        try:
            extra = [yaml.safe_load(args.overrides)]
        except yaml.YAMLError as e:
            raise ReproError(f"--overrides is not valid YAML/JSON: {getattr(e, 'problem', e)}") from None
        if not isinstance(extra[0], dict):
            raise ReproError("--overrides must be a mapping, e.g. '{max_iters: 100, data: {kind: digits}}'")
    return build_spec(args.spec, extra + [flags] + [parse_assignment(s) for s in args.set])


def add_spec_args(p):
    p.add_argument("--spec", help="YAML training spec (see src/resnet_repro/spec/specs/ for every key and its default)")
    p.add_argument(
        "--overrides",
        metavar="YAML",
        help="a YAML/JSON mapping merged over the spec file "
        "(flags and --set win over it), e.g. '{max_iters: 100, data: {kind: digits}}'",
    )
    p.add_argument(
        "--model", help="network name, e.g. resnet56, plain20, resnet34-A, resnet50 (see `resnet-repro models`)"
    )
    p.add_argument("--data", choices=["cifar10", "digits", "imagefolder", "imagenet"], help="dataset kind")
    p.add_argument("--data-root", help="dataset directory")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 if missing (needs network)")
    p.add_argument(
        "--val-split", type=int, help="hold out this many training images as validation (5000: the 45k/5k split)"
    )
    p.add_argument("--image-size", type=int, help="resize small images to this size")
    p.add_argument("--max-iters", type=int, help="iterations to train (CIFAR default 64000)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="base learning rate (default 0.1)")
    p.add_argument("--schedule", choices=["multistep", "plateau"])
    p.add_argument("--milestones", type=_csv_ints, help="lr / 10 at these iterations, e.g. 32000,48000")
    p.add_argument(
        "--no-warmup", action="store_true", help="no warm-up (the paper's lr 0.01 warm-up of ResNet-110/1202)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--log-every", type=int, help="record history (train/test error, loss, lr) every K iterations")
    p.add_argument("--checkpoint-every", type=int, help="write a checkpoint every K iterations")
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        help="also write one when this many minutes of wall time have passed since the last (default 30; 0: off)",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any spec key, dotted, value in YAML, e.g. --set schedule.milestones=[100,200]",
    )


def add_eval_precision_arg(p):
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        help="arithmetic of the forward passes (default: the checkpoint spec's eval_precision, fp32, "
        "so the numbers do not depend on the hardware; bf16 autocast only if asked)",
    )


def cmd_spec(args):
    print(yaml.safe_dump(_spec_from_args(args), sort_keys=False), end="")


def _set_threads(args):
    if getattr(args, "threads", None):
        from resnet_repro.device import set_threads

        set_threads(args.threads)


def cmd_train(args):
    from resnet_repro.training.loop import train

    spec = _spec_from_args(args)
    _set_threads(args)
    from resnet_repro.tracking.store import experiment_arg

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    metrics = train(
        spec, args.out, resume=args.resume, stop_at=args.stop_at, tracking=(uri, experiment_arg(args.experiment))
    )
    if metrics is not None:  # None on torchrun's processes other than 0
        print(json.dumps(metrics, indent=2))


def cmd_evaluate(args):
    from resnet_repro.data.views import DEFAULT_SCALES
    from resnet_repro.evaluation.evaluate import evaluate_checkpoint

    _set_threads(args)
    metrics = evaluate_checkpoint(
        args.checkpoint,
        args.out,
        args.views,
        DEFAULT_SCALES if args.scales is None else args.scales,
        args.device,
        args.batch_size,
        args.workers,
        args.data_root,
        args.precision,
        args.multiscale_flips,
    )
    print(json.dumps(metrics, indent=2))


def cmd_ensemble(args):
    from resnet_repro.evaluation.evaluate import ensemble
    from resnet_repro.files import write_json

    result = ensemble(args.scores)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=2))


def cmd_responses(args):
    from resnet_repro.evaluation.responses import responses_from_checkpoint

    _set_threads(args)
    rows = responses_from_checkpoint(
        args.checkpoint, args.out, args.device, args.data_root, args.max_images, args.precision
    )
    print(f"{len(rows)} layers written to {args.out}")


def cmd_check_data(args):
    from resnet_repro.data.sets import describe_data
    from resnet_repro.files import write_json

    spec = _spec_from_args(args)
    summary = describe_data(spec)
    if args.out:
        write_json(args.out, summary)
    print(json.dumps(summary, indent=2))


def cmd_make_imagefolder(args):
    from resnet_repro.data.sets import make_digits_imagefolder

    out = make_digits_imagefolder(args.out, args.size)
    print(f"digits written as an image folder under {out}")


def add_attempt_arg(p):
    p.add_argument(
        "--attempt",
        type=int,
        metavar="N",
        help="the workflow's attempt number: print a header line naming it (and the Slurm job) first, "
        "so a log appended to by every attempt shows where each begins",
    )


def attempt_header(args, environ=None):
    """'=== resnet-repro train: attempt 2, Slurm job 1234 on node7, 2026-01-01T12:00:00 ===', or None
    without --attempt, or on torchrun's processes other than 0."""
    import os
    import socket
    import time

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
    import os

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
    for add in (
        add_models,
        add_spec,
        add_train,
        add_check_data,
        add_evaluate,
        add_ensemble,
        add_responses,
        add_make_imagefolder,
    ):
        add(sub)
    # the sub-commands other modules register themselves
    from resnet_repro.preflight import doctor, estimate
    from resnet_repro.report import commands as report_cli
    from resnet_repro.report import figures, tables
    from resnet_repro.tracking import commands as tracking_cli

    for module in (figures, tables, tracking_cli, report_cli, estimate, doctor):
        module.add_parser(sub)
    return p


def add_models(sub):
    s = sub.add_parser(
        "models",
        help="list every network with parameters and GFLOPs (multiply-adds)",
        description="Every network with its parameter count and GFLOPs (multiply-adds, counted by "
        "torch.utils.flop_counter) at its canonical input: 32x32 (CIFAR) or 224x224 (ImageNet).",
    )
    s.add_argument("names", nargs="*", help="only these models (default: every model the paper trains)")
    s.add_argument("--family", choices=["cifar", "imagenet"])
    s.add_argument("--json", action="store_true", help="a JSON list of objects (name, params, gflops, ...)")
    s.set_defaults(func=cmd_models)


def add_spec(sub):
    s = sub.add_parser(
        "spec",
        help="print the effective training spec (defaults + YAML + flags)",
        description="Print the training spec that `train` would use, fully resolved.",
    )
    add_spec_args(s)
    s.set_defaults(func=cmd_spec)


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


def add_check_data(sub):
    s = sub.add_parser(
        "check-data",
        help="check that a spec's data set is present and readable; summarise it",
        description="Open the data set the spec names (extracting cifar-10-python.tar.gz if that is "
        "what is there) and print its split sizes and classes; fails with one line if "
        "it is missing. The workflow runs this before any training.",
    )
    add_spec_args(s)
    s.add_argument("--out", help="write the summary as JSON here")
    add_attempt_arg(s)
    s.set_defaults(func=cmd_check_data)


def add_evaluate(sub):
    s = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint (single view, centre crop, 10-crop, multi-scale)",
        description="Top-1/top-5 error of a checkpoint on its data set's evaluation split. Writes "
        "OUT/scores-<view>.npz (per-example scores and labels) and OUT/metrics.json.",
    )
    s.add_argument("checkpoint")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument(
        "--views",
        nargs="+",
        choices=["single", "center", "tencrop", "multiscale"],
        help="default: single for CIFAR nets; center tencrop multiscale for ImageNet nets",
    )
    s.add_argument(
        "--scales",
        type=_csv_ints,
        help="shorter sides for multi-scale testing (default: the paper's five, 224 to 640)",
    )
    s.add_argument(
        "--multiscale-flips",
        choices=["auto", "true", "false"],
        default="auto",
        help="also average each whole image's mirror in multi-scale testing (not in the paper's text); "
        "auto (default): if the model was trained on mirrored images (augment.flip)",
    )
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--workers", type=int, help="DataLoader workers for decoding")
    s.add_argument("--data-root", help="override the data root stored in the checkpoint")
    s.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    add_eval_precision_arg(s)
    add_attempt_arg(s)
    s.set_defaults(func=cmd_evaluate)


def add_ensemble(sub):
    s = sub.add_parser(
        "ensemble",
        help="average the softmax scores of several evaluated models",
        description="Top-1/top-5 error of the average softmax of several scores-*.npz files.",
    )
    s.add_argument("scores", nargs="+", help="scores-<view>.npz files from `evaluate`")
    s.add_argument("--out", help="write the result as JSON here")
    add_attempt_arg(s)
    s.set_defaults(func=cmd_ensemble)


def add_responses(sub):
    s = sub.add_parser(
        "responses",
        help="layer responses of every 3x3 layer (Figure 7)",
        description="Std of the output of each 3x3 conv after BN, before ReLU/addition, over the "
        "evaluation split, in layer order; written as CSV (model, layer, module, std).",
    )
    s.add_argument("checkpoint")
    s.add_argument("--out", required=True, help="CSV file to write")
    s.add_argument("--device", default="auto")
    s.add_argument("--data-root", help="override the data root stored in the checkpoint")
    s.add_argument("--max-images", type=int, help="use only the first N evaluation images")
    s.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    add_eval_precision_arg(s)
    add_attempt_arg(s)
    s.set_defaults(func=cmd_responses)


def add_make_imagefolder(sub):
    s = sub.add_parser(
        "make-imagefolder",
        help="write the bundled digits data set as an ImageFolder tree",
        description="Write scikit-learn's digits as OUT/train/<class>/*.png and OUT/val/<class>/*.png, "
        "an offline stand-in for ImageNet-style data.",
    )
    s.add_argument("--out", required=True)
    s.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    s.set_defaults(func=cmd_make_imagefolder)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "attempts_log", None):
        append_log(args.attempts_log)
    header = attempt_header(args)
    if header:
        print(header, file=sys.stderr, flush=True)
    try:
        args.func(args)
    except ReproError as e:
        from resnet_repro.training.loop import Interrupted

        print(f"resnet-repro: error: {e}", file=sys.stderr)
        return 3 if isinstance(e, Interrupted) else 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
