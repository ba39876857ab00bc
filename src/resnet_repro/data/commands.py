"""The `check-data` and `make-imagefolder` sub-commands: argparse only."""

import json

from resnet_repro.arguments import add_attempt_arg
from resnet_repro.spec.commands import add_spec_args, spec_from_args


def cmd_check_data(args):
    from resnet_repro.data.stream import describe_data
    from resnet_repro.files import write_json

    spec = spec_from_args(args)
    summary = describe_data(spec)
    if args.out:
        write_json(args.out, summary)
    print(json.dumps(summary, indent=2))


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


def cmd_make_imagefolder(args):
    from resnet_repro.data.digits import make_digits_imagefolder

    out = make_digits_imagefolder(args.out, args.size)
    print(f"digits written as an image folder under {out}")


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


# sub-command: its parser (cli.COMMANDS lists them in order)
PARSERS = {"check-data": add_check_data, "make-imagefolder": add_make_imagefolder}
