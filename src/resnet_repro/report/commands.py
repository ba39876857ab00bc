"""The `resnet-repro report` sub-command: argparse only. The report's modules (claims: numpy, scipy)
are imported when it runs, so building the command line stays light for every other job."""

from resnet_repro.plan import DEFAULT_TRACKING_URI


def cmd_report(args):
    from resnet_repro.report.build import make_report

    s = make_report(
        args.out,
        args.preset,
        args.tables,
        args.figures,
        args.runs,
        args.pdf,
        args.json,
        args.config_hash,
        args.tracking_uri,
        args.pdf_engine,
        args.chromium,
    )
    print(s["html"])
    if s["pdf"]:
        print(f"{s['pdf']['path']} ({s['pdf']['engine']}: {s['pdf']['detail']})")
    for c in s["claims"]:
        print(f"  {c['id']:<22} {c['verdict_text']}")


def add_parser(sub):
    """Register this module's sub-command(s) on the `resnet-repro` argparse sub-parsers."""
    s = sub.add_parser(
        "report",
        help="the reproduction report: figures, tables, provenance, a verdict per claim",
        description="Write one self-contained HTML report of a pipeline run: every table (paper vs "
        "reproduced, difference), every figure, the provenance of every number (MLflow "
        "run ids, git commit, config hash, preset) and a verdict on each claim of the "
        "paper (reference.yaml `claims:`) with the numbers behind it. Optionally a PDF "
        "(headless Chromium if found, else a matplotlib fallback) and, always, a JSON "
        "summary beside the HTML.",
    )
    s.add_argument("--out", required=True, help="HTML file to write, e.g. reports/report.html")
    s.add_argument("--pdf", help="also write this PDF, e.g. reports/report.pdf")
    s.add_argument("--json", help="JSON summary (verdicts, provenance) to write (default: OUT with .json)")
    s.add_argument(
        "--preset",
        required=True,
        help="the preset that produced the runs; anything but 'paper' is reported as not comparable with the paper",
    )
    s.add_argument("--config-hash", help="hash of the pipeline config (checked against the runs')")
    s.add_argument("--tables", nargs="*", default=[], metavar="CSV", help="tables from `resnet-repro table`")
    s.add_argument(
        "--figures",
        nargs="*",
        default=[],
        metavar="PNG",
        help="figures from `resnet-repro figure` (the .png; the .pdf beside it is linked)",
    )
    s.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR", help="every training run directory behind them")
    s.add_argument(
        "--tracking-uri",
        help=f"MLflow store to read run provenance from (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})",
    )
    s.add_argument(
        "--pdf-engine",
        default="auto",
        choices=["auto", "chromium", "matplotlib"],
        help="auto (default): headless Chromium if found, else matplotlib",
    )
    s.add_argument(
        "--chromium",
        metavar="PATH",
        help="Chromium executable (default: $RESNET_REPRO_CHROMIUM, else "
        "chromium/chromium-browser/google-chrome on PATH)",
    )
    s.set_defaults(func=cmd_report)
