"""What a training's MLflow run carries beyond its numbers: the data set it was trained and tested on
(run inputs, with sizes and the data's home page) and its final model as an MLflow LoggedModel (the
Models page; registrable), with the whole package as the model's code."""

import hashlib
import json
import os
from pathlib import Path

import resnet_repro
from resnet_repro.errors import ReproError
from resnet_repro.rundir import MODEL
from resnet_repro.tracking.store import log, retry

DATA_SOURCES = {
    "digits": "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html",
    "imagenet": "https://image-net.org/",
}


def dataset_inputs(spec, summary):
    """The data set a training used, as MLflow run inputs: its training split and the split its test
    curve was measured on, each with its size (metrics.json) and where the images came from."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from resnet_repro.paper.text import data_name

    d = spec["data"]
    if d.get("root") and d["kind"] != "digits":
        source_type, source = "local", Path(d["root"]).resolve().as_uri()
    else:  # digits: scikit-learn's bundled copy of the UCI set
        source_type, source = "http", DATA_SOURCES.get(d["kind"], d["kind"])
    inputs = []
    for context, split, n in (
        ("training", "train", summary.get("train_images")),
        ("evaluation", summary.get("test_split", "test"), summary.get("test_images")),
    ):
        key = {k: d.get(k) for k in ("kind", "root", "image_size", "val_split", "split_seed")}
        key.update(
            split=split,
            images=n,
            holdout=spec["schedule"].get("holdout") if spec["schedule"]["kind"] == "plateau" else None,
        )
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        entity = Dataset(
            name=f"{data_name(d)} · {split}",
            digest=digest,
            source_type=source_type,
            source=json.dumps({"url" if source_type == "http" else "uri": source}),
            profile=json.dumps({"split": split, "images": n}),
        )
        inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def log_model(run_id, run_dir, spec, params, uri):
    """RUN/model.pt as an MLflow LoggedModel of the run (Models page; registrable), with its input
    signature (mean-subtracted images at the training's size) and the training's params."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from resnet_repro.files import load_torch
    from resnet_repro.models import ResNet, parse_model_name

    try:
        ckpt = load_torch(run_dir / MODEL)
        model = ResNet(parse_model_name(spec["model"]), ckpt["num_classes"])
        model.load_state_dict(ckpt["model"])
    except (ReproError, KeyError, TypeError, RuntimeError) as e:
        log(
            f"warning: {run_dir / MODEL} is not a final model of {spec['model']} ({str(e).splitlines()[0]}); "
            f"no LoggedModel"
        )
        return None
    model.eval()
    size = ckpt["mean"].shape[-1]
    x = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        signature = infer_signature(x.numpy(), model(x).numpy())
    # the fluent API (the only way to log a model) sets the process's tracking URI and with it
    # $MLFLOW_TRACKING_URI; MLflow's own context manager puts both back afterwards
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            return _log_model_in_run(mlflow, run_id, model, signature, params, ckpt)
    finally:  # (which unsets the variable when no URI was set in this process: the user's stays)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def _log_model_in_run(mlflow, run_id, model, signature, params, ckpt):
    import torch

    with retry(mlflow.start_run, run_id=run_id):
        # pickled, with this package's code beside it so that mlflow.pytorch.load_model works anywhere
        # (torch.export's pt2 needs no code but took 4-11 s a model on 2 CPU cores, pickling 0.2 s)
        info = retry(
            mlflow.pytorch.log_model,
            model,
            name="model",
            signature=signature,
            serialization_format="pickle",
            code_paths=[str(Path(resnet_repro.__file__).resolve().parent)],  # the whole package
            params={k: str(v) for k, v in params.items()},
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],  # no slow inference
            step=int(ckpt.get("iteration", 0)),
        )
    return info.model_id
