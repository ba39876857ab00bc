"""The `figure`, `table` and `report` sub-commands: argparse only. Figures (matplotlib), tables (pandas)
and the report (claims: numpy, scipy) are imported when their command runs, so building the command line
stays light for every job."""

from resnet_repro.plan import DEFAULT_TRACKING_URI


def cmd_figure(args):
    from resnet_repro.report.figures import draw_figure

    for path in draw_figure(args.name, args.run, args.responses, args.out, args.preset):
        print(path)


def add_figure(sub):
    s = sub.add_parser(
        "figure",
        help="draw figure1, figure4, figure6 or figure7 of the paper from runs",
        description="Draw one of the paper's figures from training runs (RUN/history.csv, "
        "RUN/spec.yaml) or, for figure7, layer responses (RUN/responses.csv or "
        "--responses CSV). Writes OUT (.pdf) and the same figure as .png beside it.",
    )
    s.add_argument("name", metavar="NAME", help="figure1 | figure4 | figure6 | figure7")
    s.add_argument(
        "--run",
        action="extend",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="training run directory (repeatable); each run is drawn in the panel its model belongs to",
    )
    s.add_argument(
        "--responses",
        action="extend",
        nargs="+",
        default=[],
        metavar="CSV",
        help="responses CSV from `resnet-repro responses` (figure7)",
    )
    s.add_argument("--out", required=True, help="PDF to write, e.g. reports/figure6.pdf")
    s.add_argument(
        "--preset",
        help="preset that produced the runs (default: from results/runs/<preset>/...); "
        "anything but 'paper' is marked on the figure as not comparable",
    )
    s.set_defaults(func=cmd_figure)


def cmd_table(args):
    from resnet_repro.report.tables import make_table, write_table
    from resnet_repro.rundir import preset_of

    preset = args.preset or preset_of(args.run)
    df = make_table(args.name, args.run, args.ensemble, preset)
    for path in write_table(df, args.name, args.out, preset):
        print(path)


def add_table(sub):
    s = sub.add_parser(
        "table",
        help="table2 ... table6 of the paper with reproduced numbers beside the paper's",
        description="Build one of the paper's tables from evaluated runs (RUN/spec.yaml, "
        "RUN/eval/<view>/metrics.json) or, for table5, an ensemble JSON. Writes OUT "
        "(.csv) and a Markdown rendering beside it (.md).",
    )
    s.add_argument("name", metavar="NAME", help="table2 | table3 | table4 | table5 | table6")
    s.add_argument(
        "--run",
        action="extend",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="evaluated training run directory (repeatable; several seeds of a model are averaged)",
    )
    s.add_argument("--ensemble", metavar="JSON", help="ensemble result from `resnet-repro ensemble --out` (table5)")
    s.add_argument("--out", required=True, help="CSV to write, e.g. results/table6.csv")
    s.add_argument(
        "--preset",
        help="preset that produced the runs (default: from results/runs/<preset>/...); "
        "anything but 'paper' is marked as not comparable with the paper",
    )
    s.set_defaults(func=cmd_table)


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


def add_report(sub):
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


# sub-command: its parser (cli.COMMANDS lists them in order)
PARSERS = {"figure": add_figure, "table": add_table, "report": add_report}
