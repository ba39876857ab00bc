"""The `resnet-repro track` sub-command: one action per thing logged to MLflow (see tracking.py)."""

from pathlib import Path

from resnet_repro.errors import ReproError
from resnet_repro.files import write_json
from resnet_repro.plan import DEFAULT_TRACKING_URI
from resnet_repro.rundir import RESPONSES
from resnet_repro.tracking.record import check_eval_inputs, track_eval, track_train
from resnet_repro.tracking.runs import track_report, track_seeds
from resnet_repro.tracking.store import (
    TRAIN_EXPERIMENT,
    experiment_arg,
    mlflow_errors,
    setup,
    tracking_uri,
    ui_path,
)

URI_HELP = f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})"
EXPERIMENT_HELP = f"the trainings' experiment (default: $MLFLOW_EXPERIMENT_NAME, else {TRAIN_EXPERIMENT!r})"


@mlflow_errors
def cmd_setup(args):
    uri = tracking_uri(args.tracking_uri)
    ids = setup(uri, experiment_arg(args.experiment))
    for name, i in ids.items():
        print(f"experiment {name}: id {i} in {uri}; in the UI: {uri if uri.startswith('http') else '<UI>'}{ui_path(i)}")
    if args.out:
        write_json(args.out, {"tracking_uri": uri, "experiments": ids})


@mlflow_errors
def cmd_train(args):
    uses = [u.strip() for u in (args.uses or "").split(",") if u.strip()]
    print(track_train(args.run, args.preset, uses, args.config_hash, args.tracking_uri, args.experiment, args.source))


@mlflow_errors
def cmd_eval(args):
    if args.responses:
        for run in args.runs:
            if not (Path(run) / RESPONSES).is_file():
                raise ReproError(f"{Path(run) / RESPONSES} does not exist (run `resnet-repro responses`)")
    views = args.view or ([] if args.responses else None)
    check_eval_inputs(args.runs, views)  # every run's files first: nothing is logged for one if another lacks its own
    logged = {}
    for run in args.runs:
        run_id, n = track_eval(run, args.tracking_uri, views, responses=args.responses or not args.view)
        logged[run] = run_id
        print(f"{run}: {n} new evaluation metrics logged" if n else f"{run}: evaluation metrics already logged")
    if args.out:  # a stamp for the workflow: these evaluations are in MLflow
        write_json(args.out, {"runs": logged, "views": args.view or "all", "responses": args.responses})


@mlflow_errors
def cmd_seeds(args):
    parent = track_seeds(args.runs, args.model, args.preset, args.tracking_uri)
    if args.out:
        write_json(args.out, {"run_id": parent, "model": args.model, "runs": args.runs})
    print(parent)


@mlflow_errors
def cmd_report(args):
    run_id, exp_id = track_report(args.artifacts, args.name, args.sources, args.preset, args.tracking_uri)
    if args.out:
        write_json(
            args.out, {"run_id": run_id, "experiment_id": exp_id, "tracking_uri": tracking_uri(args.tracking_uri)}
        )
    print(run_id)


# ---------------------------------------------------------------- CLI


def add_track(sub):
    """Register `track` and its actions on the `resnet-repro` argparse sub-parsers."""
    p = sub.add_parser(
        "track",
        help="log trainings, figures and tables to MLflow",
        description="Log finished trainings and made figures/tables to an MLflow store "
        f"(--tracking-uri, else $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI}). "
        "Every command is idempotent and safe to run in parallel jobs.",
    )
    actions = p.add_subparsers(dest="track_command", required=True, metavar="ACTION")
    for add in (add_setup, add_train, add_eval, add_seeds, add_report):
        add(actions)


def add_setup(actions):
    s = actions.add_parser(
        "setup",
        help="create the store and experiments (once, before jobs start)",
        description="Create the store schema, the trainings' experiment and its reports "
        "experiment ('<NAME> · reports'), idempotently. With a SQLite store, "
        "artifacts go to mlartifacts/ beside the database file.",
    )
    s.add_argument("--tracking-uri", help=URI_HELP)
    s.add_argument("--experiment", help=EXPERIMENT_HELP)
    s.add_argument("--out", help="write a JSON stamp with the experiment ids here")
    s.set_defaults(func=cmd_setup)


def add_train(actions):
    s = actions.add_parser(
        "train",
        help="log a finished training directory as one run",
        description="Log RUN (spec.yaml, history.csv, metrics.json, model.pt, and any "
        "eval/<view>/metrics.json) as one MLflow run; write RUN/mlflow.json. "
        "Does nothing if the same checkpoint is already tracked.",
    )
    s.add_argument("run", metavar="RUN", help="training output directory")
    s.add_argument("--preset", required=True, help="the pipeline preset the run belongs to")
    s.add_argument("--uses", help="comma-separated figures/tables made from this run, e.g. figure6,table6")
    s.add_argument("--config-hash", help="hash of the pipeline config that produced the run")
    s.add_argument("--source", help="what made the run, shown as its Source (default: 'resnet-repro train')")
    s.add_argument("--tracking-uri", help=URI_HELP)
    s.add_argument("--experiment", help=EXPERIMENT_HELP)
    s.set_defaults(func=cmd_train)


def add_eval(actions):
    s = actions.add_parser(
        "eval",
        help="add runs' evaluation metrics to their tracked runs",
        description="Log each RUN/eval/<view>/metrics.json as <view>_top1_error and "
        "<view>_top5_error on the run RUN/mlflow.json names (idempotent). Several RUNs in one call: "
        "the workflow logs what one table or figure shows in one job.",
    )
    s.add_argument("runs", nargs="+", metavar="RUN", help="training directories (each with mlflow.json)")
    s.add_argument("--view", action="append", help="only this view's eval/VIEW/metrics.json (repeatable)")
    s.add_argument("--responses", action="store_true", help="RUN/responses.csv (Figure 7's layer responses)")
    s.add_argument("--tracking-uri", help=URI_HELP)
    s.add_argument("--out", metavar="STAMP", help="write a JSON stamp here once logged")
    s.set_defaults(func=cmd_eval)


def add_seeds(actions):
    s = actions.add_parser(
        "seeds",
        help="group one model's seeds under a parent run with best / mean / std",
        description="Make (or find) a parent run for the tracked runs of one model's seeds, with "
        "<metric>_best, _mean and _std of the final test error and every evaluation's "
        "errors, and make each seed's run its child (idempotent).",
    )
    s.add_argument("runs", nargs="+", metavar="RUN", help="training directories (each with mlflow.json)")
    s.add_argument("--model", required=True)
    s.add_argument("--preset", required=True)
    s.add_argument("--tracking-uri", help=URI_HELP)
    s.add_argument("--out", metavar="STAMP", help="write a JSON stamp with the parent run id here")
    s.set_defaults(func=cmd_seeds)


def add_report(actions):
    s = actions.add_parser(
        "report",
        help="log a figure or table as one run, linked to its training runs",
        description="Log the files of a figure/table as one run of the reports experiment, "
        "tagged with the run ids of its sources; each source run gets the tag "
        "used_by_<NAME>. Does nothing if the same files are already tracked.",
    )
    s.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="files of the figure/table")
    s.add_argument("--name", required=True, help="figure/table name, e.g. figure6")
    s.add_argument(
        "--sources",
        nargs="+",
        required=True,
        metavar="RUN",
        help="training directories (each with mlflow.json) the artifact was made from",
    )
    s.add_argument("--preset", required=True)
    s.add_argument("--tracking-uri", help=URI_HELP)
    s.add_argument("--out", metavar="STAMP", help="write a JSON stamp with the run id here")
    s.set_defaults(func=cmd_report)


# sub-command: its parser (cli.COMMANDS lists them in order)
PARSERS = {"track": add_track}
