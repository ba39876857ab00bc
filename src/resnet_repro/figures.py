"""(being written)"""


def add_parser(sub):
    """Register this module's sub-command(s) on the `resnet-repro` argparse sub-parsers."""
