"""The MLflow store every job logs to: its URI, a client whose calls are retried while SQLite is
locked, the experiments (`setup`), and the small helpers the tracking and the report share.

Every job logs to a shared store (by default a SQLite file) that several processes write at
once, so every client call goes through `retry`. mlflow is imported inside functions only, so
`resnet-repro --help` stays fast.
"""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import resnet_repro
from resnet_repro.errors import ReproError
from resnet_repro.plan import DEFAULT_TRACKING_URI

TRAIN_EXPERIMENT = "resnet-repro"  # without --experiment; the workflow names one per preset (plan.Plan)
RETRIES = 10


def log(msg):
    print(f"[track] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- store access


def reports_experiment(name):
    """The experiment of the figures, tables and report made from the trainings of experiment `name`."""
    return f"{name} · reports"


def ui_path(experiment_id, run_id=None):
    """The UI's page of an experiment (its runs table) or run. MLflow 3's UI opens every experiment in
    the mode the browser last used, GenAI by default (its traces page), whatever the experiment's
    kind: `workflowType=machine_learning` in the address opens the model-training pages."""
    run = f"/runs/{run_id}" if run_id else ""
    return f"/#/experiments/{experiment_id}{run}?workflowType=machine_learning"


def experiment_arg(flag=None):
    return flag or os.environ.get("MLFLOW_EXPERIMENT_NAME") or TRAIN_EXPERIMENT


def tracking_uri(flag=None):
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sqlite_path(uri):
    """The database file of a sqlite:/// URI (relative to the cwd unless absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def is_locked(exc):
    # MLflow wraps sqlite3.OperationalError in MlflowException; look through the whole chain
    while exc is not None:
        text = str(exc).lower()
        if "database is locked" in text or "database table is locked" in text or "database is busy" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# The rows MLflow writes as "look up, then insert": a data set and a run's inputs (log_inputs), a tag
# (set_tag), a parameter (log_param). Two jobs writing the same row at once (two trainings that log one
# data set, two `track eval` jobs of tables that share a training) both miss it and the second insert
# breaks the unique key. Retried, the lookup finds the row and the write is an update (or, for a
# parameter, the usual check that its value is unchanged). SQLite says "UNIQUE constraint failed:
# tags.key, tags.run_uuid"; PostgreSQL and MySQL servers "duplicate key ... tag_pk".
UPSERT_ROWS = ("dataset", "input", "tag", "param")


def is_upsert_race(exc):
    text = str(exc).lower()
    return ("unique constraint" in text or "duplicate" in text) and any(row in text for row in UPSERT_ROWS)


def retry(fn, *args, **kwargs):
    """fn(*args, **kwargs), retried with jittered exponential backoff while SQLite says "locked" or
    another job has just inserted the same row (is_upsert_race). Safe because MLflow rolls a failed
    transaction back and dedupes identical metric points, data sets, tags and parameters."""
    for attempt in range(RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not (is_locked(e) or is_upsert_race(e)):
                raise
            if attempt == RETRIES - 1:
                raise ReproError(
                    f"tracking store stayed busy after {RETRIES} attempts "
                    f"({getattr(fn, '__name__', fn)}): {str(e).splitlines()[0]}"
                ) from None
            time.sleep(min(20.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5))


class RetryingClient:
    """MlflowClient whose every method call goes through retry."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return lambda *a, **k: retry(attr, *a, **k)


def client(uri, create=False):
    """A retrying MlflowClient for `uri`. Unless `create`, a missing SQLite file is an error
    (jobs must not race to create the schema: `track setup` does that once)."""
    db = sqlite_path(uri)
    if db is not None and not create and not db.exists():
        raise ReproError(f"tracking store {db} does not exist; run `resnet-repro track setup` first")
    from mlflow import MlflowClient

    # the constructor opens the store (schema check), so it is retried too
    return RetryingClient(retry(MlflowClient, tracking_uri=uri))


def experiment_id(c, name, uri):
    exp = c.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        raise ReproError(f"no experiment {name!r} in {uri}; run `resnet-repro track setup` first")
    return exp.experiment_id


def auth_error(exc, uri):
    """One line saying what to set when a tracking server refused a request for its credentials
    (HTTP 401: none, or wrong ones; 403: the user may not do it), else None. The client sends
    MLFLOW_TRACKING_USERNAME/PASSWORD, else those of ~/.mlflow/credentials."""
    code = getattr(exc, "error_code", None)
    if code not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return None
    from mlflow.utils.credentials import read_mlflow_creds

    user, password = read_mlflow_creds()
    if code == "PERMISSION_DENIED":
        return (
            f"MLflow server {uri} refused user {user!r} a permission (403): its admin grants it "
            f"(docs/tracking.md: the tracking server), or log as another user"
        )
    given = "refused the credentials" if user and password else "asks for credentials, and none are set"
    return (
        f"MLflow server {uri} {given} (401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
        f"(or ~/.mlflow/credentials) to an account of the server"
    )


def mlflow_errors(fn):
    """Turn MLflow's exceptions into one-line ReproErrors for the CLI."""

    def wrapped(args):
        from mlflow.exceptions import MlflowException

        try:
            return fn(args)
        except MlflowException as e:
            auth = auth_error(e, tracking_uri(getattr(args, "tracking_uri", None)))
            raise ReproError(auth or f"MLflow: {str(e.message).splitlines()[0]}") from None

    return wrapped


# ---------------------------------------------------------------- small helpers


def git_commit():
    """The commit of the code that ran, '+dirty' when tracked files have uncommitted changes: asked in
    the package's own checkout, not the cwd (Snakemake may run with --directory outside the repository)."""

    def git(*args):
        where = Path(resnet_repro.__file__).resolve().parent
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=where)

    try:
        out = git("rev-parse", "HEAD")
        if out.returncode != 0 or not out.stdout.strip():
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty else "")


def run_dir_tag(run_dir):
    """RUN relative to the cwd when inside it (Snakemake runs from the project root, and a moved
    project still matches), else absolute."""
    path = Path(run_dir).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def quote(value):
    """`value` as a string literal of an MLflow search filter."""
    return f"'{value}'" if "'" not in value else f'"{value}"'


def read_json(path, what):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReproError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise ReproError(f"cannot read {what} {path}: {e}") from None


def find_finished(c, exp_id, tags):
    """FINISHED runs of exp_id whose tags equal `tags` (a crashed attempt stays RUNNING and is ignored)."""
    where = " and ".join(f"tags.`{k}` = {quote(v)}" for k, v in tags.items())
    return c.search_runs(
        [exp_id], f"{where} and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=10
    )


# ---------------------------------------------------------------- setup

EXPERIMENT_NOTES = {
    "train": "Trainings of resnet-repro (He et al. 2016, Deep Residual Learning for Image Recognition), one "
    "run per model and seed: curves, final and evaluation errors, the data set used and the model.",
    "reports": "Figures, tables and the reproduction report of resnet-repro, each linked to the training runs "
    "it was made from (tags source_run_ids; the trainings carry used_by_<artifact>).",
}


def setup(uri, name=TRAIN_EXPERIMENT):
    """Create the schema, experiment `name` and its reports experiment (idempotent); return
    {experiment name: id}. Both open in the UI on the runs table (model training, not GenAI)."""
    db = sqlite_path(uri)
    artifacts = None
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        # absolute, so later jobs with another cwd still put artifacts beside the database
        artifacts = db.resolve().parent / "mlartifacts"
    c = client(uri, create=True)
    ids = {}
    for kind, name in (("train", name), ("reports", reports_experiment(name))):
        exp = c.get_experiment_by_name(name)
        if exp is None:
            from mlflow.exceptions import MlflowException

            location = (artifacts / name).as_uri() if artifacts else None
            try:
                ids[name] = c.create_experiment(name, artifact_location=location)
            except MlflowException as e:  # another setup created it meanwhile
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                ids[name] = c.get_experiment_by_name(name).experiment_id
        else:
            if exp.lifecycle_stage != "active":
                c.restore_experiment(exp.experiment_id)
            ids[name] = exp.experiment_id
        c.set_experiment_tag(ids[name], "mlflow.experimentKind", "custom_model_development")
        c.set_experiment_tag(ids[name], "mlflow.note.content", EXPERIMENT_NOTES[kind])
    return ids
