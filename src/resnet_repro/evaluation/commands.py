"""The `evaluate`, `ensemble` and `responses` sub-commands: argparse only."""

import json

from resnet_repro.arguments import add_attempt_arg, csv_ints, set_threads


def add_eval_precision_arg(p):
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        help="arithmetic of the forward passes (default: the checkpoint spec's eval_precision, fp32, "
        "so the numbers do not depend on the hardware; bf16 autocast only if asked)",
    )


def cmd_evaluate(args):
    from resnet_repro.data.views import DEFAULT_SCALES
    from resnet_repro.evaluation.evaluate import evaluate_checkpoint

    set_threads(args)
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
        type=csv_ints,
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


def cmd_ensemble(args):
    from resnet_repro.evaluation.evaluate import ensemble
    from resnet_repro.files import write_json

    result = ensemble(args.scores)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=2))


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


def cmd_responses(args):
    from resnet_repro.evaluation.responses import responses_from_checkpoint

    set_threads(args)
    rows = responses_from_checkpoint(
        args.checkpoint, args.out, args.device, args.data_root, args.max_images, args.precision
    )
    print(f"{len(rows)} layers written to {args.out}")


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


# sub-command: its parser (cli.COMMANDS lists them in order)
PARSERS = {"evaluate": add_evaluate, "ensemble": add_ensemble, "responses": add_responses}
