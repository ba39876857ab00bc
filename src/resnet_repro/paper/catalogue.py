"""The figures and tables the pipeline makes, one record each: what an artifact is and needs. The plan
(plan.Plan), the workflow (common.smk and its rules), the tables, the figures, the report, tracking
and estimate read it here. Adding an artifact is one record and its drawing (figures.PANELS, or a
table's columns in tables.py); its runs are listed in config.yaml's `experiments`."""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    name: str  # "figure7", "table6": its target's name, its MLflow run, its `experiments` entry
    kind: str  # "figure" | "table"
    family: str  # the data its runs are trained on: "cifar" | "imagenet"
    reference: str | None = None  # a table's numbers in reference.yaml (captions: under its name)
    view: str | None = None  # the evaluation view a table reads (an ensemble: its members' view)
    shows: str | None = None  # what beyond the training it shows in MLflow: "eval" (the view), "responses"
    seeds: str = "all"  # the seeds of each model it is made from: "all", or the "first" of config `seeds`
    ensemble: bool = False  # made from the average of its runs' scores (Table 5), not from each run

    def files(self):
        """The files it writes: a figure's PDF and PNG, a table's CSV and Markdown."""
        if self.kind == "figure":
            return (f"reports/{self.name}.pdf", f"reports/{self.name}.png")
        return (f"results/{self.name}.csv", f"results/{self.name}.md")


CATALOGUE = (
    Artifact("figure1", "figure", "cifar", seeds="first"),
    Artifact("figure4", "figure", "imagenet", seeds="first"),
    Artifact("figure6", "figure", "cifar", seeds="first"),
    Artifact("figure7", "figure", "cifar", shows="responses", seeds="first"),
    Artifact("table2", "table", "imagenet", "table2_imagenet_top1_10crop", view="tencrop", shows="eval"),
    Artifact("table3", "table", "imagenet", "table3_imagenet_10crop", view="tencrop", shows="eval"),
    Artifact("table4", "table", "imagenet", "table4_imagenet_single_model", view="multiscale", shows="eval"),
    Artifact("table5", "table", "imagenet", "table5_imagenet_ensembles", "multiscale", "eval", "first", ensemble=True),
    Artifact("table6", "table", "cifar", "table6_cifar10", view="single", shows="eval"),
)
ARTIFACT = {a.name: a for a in CATALOGUE}
FIGURES = tuple(a.name for a in CATALOGUE if a.kind == "figure")
TABLES = tuple(a.name for a in CATALOGUE if a.kind == "table")
ARTIFACTS = FIGURES + TABLES
ENSEMBLE = next(a for a in CATALOGUE if a.ensemble)  # Table 5: the one made from an ensemble
# the evaluation the report's claims read of a family's runs (their per-image scores: paired
# comparisons): the view of the family's headline table (CIFAR: Table 6's; ImageNet: Table 2's)
CLAIM_VIEW = {"cifar": ARTIFACT["table6"].view, "imagenet": ARTIFACT["table2"].view}


def artifact_of(target):
    """The artifact a target names, else None: its name (table6) or a file named after it
    (results/table6.csv, reports/figure7.pdf, results/mlflow/paper/table6.json)."""
    m = re.fullmatch(r"(\w+)(?:\.\w+)?", target.rsplit("/", 1)[-1])
    return ARTIFACT.get(m.group(1)) if m else None
