"""The `estimate` and `doctor` sub-commands: argparse only (each imports its checks when it runs)."""

from resnet_repro.arguments import set_threads
from resnet_repro.errors import ReproError


def cmd_estimate(args):
    from resnet_repro.preflight.estimate import estimate

    if args.markdown and (args.targets != ["all"] or not args.rates):
        raise ReproError(
            "--markdown: the cost block is of `all` at measured rates: estimate all --rates FILE --markdown"
        )
    set_threads(args)
    result = estimate(
        args.targets,
        [args.config, *args.configfile],
        args.preset,
        args.images_per_s,
        args.measure,
        args.device,
        args.iters,
        args.warmup,
        args.measure_batch,
        rates=args.rates,
        log=(lambda m: None) if args.markdown else print,
    )
    if args.markdown:
        from resnet_repro.preflight.cost import cost_markdown

        print(cost_markdown(result))
    if args.json:
        from resnet_repro.files import write_json

        write_json(args.json, result)
        print(f"written {args.json}")


def add_estimate(sub):
    s = sub.add_parser(
        "estimate",
        help="expected GPU-hours (device-hours) of a workflow target from measured throughput",
        description="For every training a Snakemake target needs (as config.yaml's preset plans it): "
        "images = max_iters x batch_size, divided by the model's training throughput, "
        "which is --images-per-s, else that of finished runs (results/runs/<preset>/"
        "<model>/seed<k>/metrics.json), else measured now with a short timing of the "
        "trainer's step on this machine. Prints a table per model and the total.",
    )
    s.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="all, a preset name (e.g. paper, demo), results/table6.csv, reports/figure7.pdf, table6, "
        "or results/runs/<preset>/<model>/seed<k>",
    )
    s.add_argument(
        "--config",
        default="config.yaml",
        help="the workflow config (default config.yaml; its schema is "
        "workflow/schemas/config.schema.yaml beside it, finished runs under results/ beside it)",
    )
    s.add_argument(
        "--configfile",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="config files merged in order over --config's, as `snakemake --configfile` merges them over "
        "the Snakefile's config.yaml (e.g. tests/config/tiny.yaml, the tests' preset)",
    )
    s.add_argument("--preset", help="preset to plan with (default: the configs' `preset`, as Snakemake)")
    s.add_argument(
        "--images-per-s",
        action="append",
        default=[],
        metavar="MODEL=N",
        help="use this throughput for MODEL (repeatable), e.g. resnet56=2500",
    )
    s.add_argument(
        "--rates",
        metavar="FILE",
        help="throughputs measured on a GPU (a rates file: benchmarks/results/rates-*.json), used before "
        "finished runs and measuring now",
    )
    s.add_argument("--markdown", action="store_true", help="print the README's cost block (with all and --rates)")
    s.add_argument("--measure", action="store_true", help="measure now even where finished runs have a throughput")
    s.add_argument("--device", default="auto", help="device to measure on: auto, cpu, cuda, cuda:N")
    s.add_argument("--iters", type=int, default=5, help="timed iterations per model (default 5)")
    s.add_argument("--warmup", type=int, default=2, help="warm-up iterations per model (default 2)")
    s.add_argument(
        "--measure-batch",
        type=int,
        help="batch size for the timing (default: the run's; at most 32 "
        "for ImageNet-size inputs on a CPU); throughput in images/s is assumed to carry over",
    )
    s.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    s.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    s.set_defaults(func=cmd_estimate)


def cmd_doctor(args):
    from resnet_repro.preflight.doctor import doctor

    set_threads(args)
    results = doctor(args.device, args.compile, show_traceback=args.traceback, config=args.config, work=args.work)
    if any(s == "failed" for s in results.values()):
        raise ReproError("doctor: some checks failed (lines marked failed above)")


def add_doctor(sub):
    s = sub.add_parser(
        "doctor",
        help="check, in a few minutes, every code path the pipeline uses on this node",
        description="Run every code path of the pipeline on this node briefly and for real, with the "
        "settings `auto` picks here: ResNet-56 training at CIFAR shapes (stopped, "
        "checkpointed, resumed), ResNet-50 training from generated JPEG files, the JPEG "
        "decoder, every evaluation view, a DDP step under torchrun over every visible GPU, "
        "and the GPU-hours of the paper preset from the measured images/s. One line per "
        "check (ok / failed / skipped, and why); exit status 2 if any failed. On a CPU "
        "the same checks run at tiny sizes.",
    )
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    s.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "true", "false"],
        help="torch.compile for the training checks (default: what auto picks for the paper's runs)",
    )
    s.add_argument("--config", default="config.yaml", help="the workflow config the estimate plans with")
    s.add_argument("--work", help="keep the generated files and runs in this directory (default: a temporary one)")
    s.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    s.add_argument("--traceback", action="store_true", help="print the traceback of each failed check")
    s.set_defaults(func=cmd_doctor)


# sub-command: its parser (cli.COMMANDS lists them in order)
PARSERS = {"estimate": add_estimate, "doctor": add_doctor}
