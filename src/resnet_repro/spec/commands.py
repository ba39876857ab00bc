"""The `models` and `spec` sub-commands, and the spec flags `train`, `spec` and `check-data` share: argparse
only (each command imports its code when it runs)."""

import json

import yaml

from resnet_repro.arguments import csv_ints
from resnet_repro.errors import ReproError


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


def spec_from_args(args):
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
    p.add_argument("--milestones", type=csv_ints, help="lr / 10 at these iterations, e.g. 32000,48000")
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


def cmd_spec(args):
    print(yaml.safe_dump(spec_from_args(args), sort_keys=False), end="")


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


# sub-command: its parser (cli.COMMANDS lists them in order)
PARSERS = {"models": add_models, "spec": add_spec}
