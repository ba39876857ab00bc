"""A training run directory, results/runs/<preset>/<model>/seed<k>/, read in one place: spec.yaml,
history.csv, metrics.json, eval/<view>/metrics.json, responses.csv and mlflow.json, and the rules that
decode a path into its run and preset. figures, tables and report read runs only through RunDir."""

import csv
import io
import json
import re
from functools import cached_property
from pathlib import Path

import yaml

from resnet_repro.errors import ReproError
from resnet_repro.paper.names import parse_model_name
from resnet_repro.paper.text import data_names

HISTORY_COLUMNS = ["iteration", "train_error", "test_error"]

# Every file of a run directory, by name: the trainer, the evaluation, tracking, the report and the
# workflow's rules (through common.smk) build their paths from these and nowhere else.
SPEC = "spec.yaml"  # the resolved training spec
HISTORY = "history.csv"  # the training curve: a row every log_every iterations
METRICS = "metrics.json"  # the finished training's summary; each evaluation's, in its view's directory
MODEL = "model.pt"  # the final model, without optimizer state
CHECKPOINT = "checkpoint.pt"  # everything an exact resume needs (with optimizer state)
LOCK = "train.lock"  # one trainer at a time in a run directory (runlock)
MLFLOW = "mlflow.json"  # the training's MLflow run (`track train`)
LIVE_FILE = "mlflow-live.json"  # the MLflow run a training logged live (live), for `track train`
RESPONSES = "responses.csv"  # the layer responses (Figure 7)
EVAL = "eval"  # one directory per evaluated view


def eval_dir(view):
    """A view's evaluation directory, relative to its run directory: eval/<view>."""
    return f"{EVAL}/{view}"


def scores_name(view):
    """The per-image scores of a view's evaluation, in its directory: scores-<view>.npz."""
    return f"scores-{view}.npz"


def view_metrics(view):
    """eval/<view>/metrics.json, relative to the run directory."""
    return f"{eval_dir(view)}/{METRICS}"


def view_scores(view):
    """eval/<view>/scores-<view>.npz, relative to the run directory."""
    return f"{eval_dir(view)}/{scores_name(view)}"


def view_of_scores(path):
    """The view a scores file holds, from its name (scores-<view>.npz)."""
    return Path(path).stem.removeprefix("scores-")


def scores_metrics(scores_file):
    """The metrics.json `evaluate` wrote beside a scores file, as a dict ({} if absent or unreadable)."""
    try:
        m = json.loads((Path(scores_file).parent / METRICS).read_text())
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}


def read_csv(path, columns):
    """Rows of a CSV as dicts, with `columns` required and parsed as floats (strings elsewhere)."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except FileNotFoundError:
        raise ReproError(f"{path} does not exist") from None
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise ReproError(f"cannot read {path}: {e}") from None
    if not rows:
        raise ReproError(f"{path} has no data rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ReproError(f"{path} is malformed: missing column(s) {', '.join(missing)}")
    try:
        for r in rows:
            r.update({c: float(r[c]) for c in columns})
    except (TypeError, ValueError):
        raise ReproError(f"{path} is malformed: non-numeric value in {', '.join(columns)}") from None
    return rows


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ReproError(f"{path} is malformed: {e}") from None


def read_spec(run):
    """RUN/spec.yaml as a dict with a valid `model`."""
    run = Path(run)
    if not run.is_dir():
        raise ReproError(f"run directory {run} does not exist")
    path = run / SPEC
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ReproError(f"{path} does not exist (not a training run directory?)") from None
    except (OSError, yaml.YAMLError) as e:
        raise ReproError(f"cannot read {path}: {e.__class__.__name__}: {e}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
        raise ReproError(f"{path} is malformed: no `model` key")
    try:
        parse_model_name(spec["model"])
    except ReproError as e:
        raise ReproError(f"{path}: {e}") from None
    return spec


class RunDir:
    """One training run directory; each file is read when first asked for. Optional files a run may
    not have yet (history, responses, mlflow.json, metrics.json) read as empty/None."""

    def __init__(self, path):
        self.dir = Path(path)
        self.spec = read_spec(self.dir)
        self.model_spec = parse_model_name(self.spec["model"])
        self.model = self.model_spec.name  # canonical: 'resnet34-B' and 'resnet34' meet
        self.seed = self.spec.get("seed")
        self.store = None  # the run as the MLflow store has it, filled by report.read_store
        self._image_errors = {}  # view -> image_errors(view)

    @property
    def family(self):
        return self.model_spec.family

    @property
    def data(self):
        """The spec's `data` block ({} if absent)."""
        return self.spec.get("data") if isinstance(self.spec.get("data"), dict) else {}

    def require(self, name):
        if not (self.dir / name).is_file():
            raise ReproError(f"{self.dir / name} does not exist")

    @cached_property
    def history(self):
        """history.csv rows, iteration/train_error/test_error as floats; [] before the first row is written."""
        path = self.dir / HISTORY
        return read_csv(path, HISTORY_COLUMNS) if path.is_file() else []

    def eval_metrics(self, view):
        """eval/<view>/metrics.json as written by `evaluate`."""
        path = self.dir / view_metrics(view)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise ReproError(f"{path} does not exist (run `resnet-repro evaluate --views {view}` first)") from None
        except (OSError, ValueError) as e:
            raise ReproError(f"{path} is malformed: {e.__class__.__name__}: {e}") from None

    @cached_property
    def evals(self):
        """{view: {top1, top5, n}} over every eval/*/metrics.json (n: images evaluated, None if unrecorded)."""
        evals = {}
        for path in sorted(self.dir.glob(view_metrics("*"))):
            try:
                for view, v in json.loads(path.read_text())["views"].items():
                    n = int(v["n"]) if v.get("n") else None
                    evals[view] = {"top1": float(v["top1_error"]), "top5": float(v["top5_error"]), "n": n}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ReproError(f"{path} is malformed: {e.__class__.__name__}: {e}") from None
        return evals

    @cached_property
    def metrics(self):
        """metrics.json (written when the training ends), {} before."""
        path = self.dir / METRICS
        metrics = read_json(path) if path.is_file() else {}
        if not isinstance(metrics, dict):
            raise ReproError(f"{path} is malformed: not a JSON object")
        return metrics

    @property
    def precision(self):
        """What training computed in (metrics.json `precision`), None if not recorded."""
        return self.metrics.get("precision")

    @cached_property
    def response_modules(self):
        """[(module, response std)] of each layer in layer order (responses.csv), None if not measured."""
        path = self.dir / RESPONSES
        if not path.is_file():
            return None
        rows = sorted(read_csv(path, ["layer", "std"]), key=lambda r: r["layer"])
        return [(r.get("module") or "", r["std"]) for r in rows]

    @property
    def responses(self):
        """The response std of each layer in layer order (responses.csv), None if not measured."""
        return None if self.response_modules is None else [std for _, std in self.response_modules]

    def image_errors(self, view):
        """{"top1", "top5": 0/1 error of each image, "labels", "images": the images' identity (None in scores
        saved before it was recorded)} from the saved scores of `view`, None if absent; kept per view, unlike
        the scores (for ImageNet 50,000 x 1,000)."""
        import numpy as np

        if view not in self._image_errors:
            saved = self.scores(view)
            if saved is None:
                self._image_errors[view] = None
            else:
                scores, labels, images = saved
                top = np.argsort(-scores, axis=1, kind="stable")[:, : min(5, scores.shape[1])]
                hit = top == labels[:, None]
                self._image_errors[view] = {
                    "top1": ~hit[:, 0],
                    "top5": ~hit.any(axis=1),
                    "labels": labels,
                    "images": images,
                }
        return self._image_errors[view]

    def scores_path(self, view):
        return self.dir / view_scores(view)

    def scores(self, view):
        """(scores, labels, images) from eval/<view>/scores-<view>.npz (`evaluate`): numpy arrays, and the
        identity of the images scored (evaluate.images_identity; None in files saved before it was
        recorded); None if absent."""
        import numpy as np  # only the claims read scores: not at every import of rundir

        path = self.scores_path(view)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                images = str(z["images"]) if "images" in z.files else None
                return z["scores"].astype(np.float64), z["labels"], images
        except (OSError, ValueError, KeyError) as e:
            raise ReproError(f"{path} is malformed: {e.__class__.__name__}: {e}") from None

    @cached_property
    def mlflow(self):
        """mlflow.json (run_id, experiment_id) once `track train` logged the run, else None."""
        path = self.dir / MLFLOW
        return read_json(path) if path.is_file() else None

    @property
    def run_id(self):
        return (self.mlflow or {}).get("run_id")


class Runs:
    """Several run directories, each once, by (model, seed) and by directory."""

    def __init__(self, run_dirs):
        self.list, self.by_key = [], {}
        for d in dict.fromkeys(str(Path(r)) for r in run_dirs):
            r = RunDir(d)
            key = (r.model, str(r.seed))
            if key in self.by_key:
                raise ReproError(f"runs {self.by_key[key].dir} and {r.dir} are both {r.model} seed {r.seed}")
            self.by_key[key] = r
            self.list.append(r)

    def get(self, model, seed):
        return self.by_key.get((model, str(seed)))

    def of_model(self, model):
        return [r for r in self.list if r.model == model]

    def by_dir(self, path):
        path = Path(path).resolve()
        return next((r for r in self.list if r.dir.resolve() == path), None)


def run_of_file(path):
    """The run directory holding a file such as RUN/eval/<view>/scores-<view>.npz (the nearest of its
    three parents with a spec.yaml), or None."""
    return next((run for run in list(Path(path).parents)[:3] if (run / SPEC).exists()), None)


def run_path(preset, model, seed):
    """The run directory of a training, relative to the workflow: the one place the layout is written
    (the workflow's rules pass "{model}" and "{seed}" to get their wildcard pattern)."""
    return f"results/runs/{preset}/{model}/seed{seed}"


def parse_run_path(path):
    """(preset, model, seed) of a path in or of a run directory <...>/<preset>/<model>/seed<k>[/file], from
    the innermost seed<k> part; None if there is none."""
    parts = Path(path).parts
    i = next((i for i in range(len(parts) - 1, 1, -1) if re.fullmatch(r"seed\d+", parts[i])), None)
    return (parts[i - 2], parts[i - 1], int(parts[i][4:])) if i else None


def preset_of(paths):
    """The preset of the runs the paths are in (see parse_run_path), if every path agrees; None otherwise."""
    found = {(parse_run_path(Path(p).resolve()) or (None,))[0] for p in paths}
    return found.pop() if len(found) == 1 else None


def data_of_runs(run_dirs):
    """The data sets of the given run directories, in words ('digits (8x8)' or 'CIFAR-10, ImageNet')."""
    return data_names(read_spec(r).get("data") for r in dict.fromkeys(map(str, run_dirs)))
