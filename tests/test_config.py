"""The workflow config: presets, validation (one-line errors), and what each artifact needs."""

import copy
from pathlib import Path

import pytest
import yaml
from conftest import TINY_CONFIG

from resnet_repro.errors import ReproError
from resnet_repro.paper.catalogue import ARTIFACT, ARTIFACTS, CATALOGUE, ENSEMBLE, TABLES, artifact_of
from resnet_repro.plan import Plan, read_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
# config.yaml with the tests' preset merged over it, as `snakemake --configfile tests/config/tiny.yaml` has it
WITH_TINY = read_config([ROOT / "config.yaml", TINY_CONFIG])


def plan(preset="paper", **changes):
    c = copy.deepcopy(WITH_TINY if preset == "tiny" else CONFIG)
    c["preset"] = preset
    c.update(changes)
    return Plan(c, SCHEMA)


@pytest.mark.parametrize("preset", ["paper", "demo", "tiny"])
def test_every_preset_is_valid_and_names_every_artifact(preset):
    p = plan(preset)
    assert all(p.runs(a) for a in ARTIFACTS)


def test_the_catalogue_describes_each_artifact_once():
    """What each figure and table is and needs, as the paper's figures and tables are (the reference's
    keys exist; a table reads one view; Figure 7 alone shows layer responses; Table 5 is the ensemble)."""
    from resnet_repro.paper.text import reference

    ref = reference()
    assert len(ARTIFACT) == len(CATALOGUE) == 9 and ARTIFACTS == tuple(a.name for a in CATALOGUE)
    for a in CATALOGUE:
        assert a.family in ("cifar", "imagenet") and a.seeds in ("first", "all")
        if a.kind == "table":
            assert a.reference in ref and a.name in ref["tables"] and a.view and a.shows == "eval"
            assert a.files() == (f"results/{a.name}.csv", f"results/{a.name}.md")
        else:
            assert a.name in ref["figures"] and a.view is None and a.seeds == "first"
            assert a.files() == (f"reports/{a.name}.pdf", f"reports/{a.name}.png")
    assert [a.name for a in CATALOGUE if a.shows == "responses"] == ["figure7"] and ENSEMBLE.name == "table5"


@pytest.mark.parametrize(
    "target, name",
    [
        ("table6", "table6"),
        ("results/table6.csv", "table6"),
        ("/x/reports/figure7.pdf", "figure7"),
        ("results/mlflow/paper/table2.json", "table2"),
        ("table7", None),
        ("results/runs/paper", None),
        ("all", None),
    ],
)
def test_a_target_names_its_artifact(target, name):
    assert getattr(artifact_of(target), "name", None) == name


def test_paper_preset_follows_the_paper():
    p = plan()
    assert p.runs("figure7") == [(m, 0) for m in ["plain20", "plain56", "resnet20", "resnet56", "resnet110"]]
    table6 = p.runs("table6")
    assert [s for m, s in table6 if m == "resnet110"] == [0, 1, 2, 3, 4]
    assert {m for m, _ in table6} == {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"}
    table5 = p.runs("table5")
    assert len(table5) == 6 and table5.count(("resnet152", 0)) == 1 and ("resnet152", 1) in table5
    o = p.train_overrides("resnet56", 0)
    assert o["data"]["kind"] == "cifar10" and o["model"] == "resnet56" and o["seed"] == 0
    assert p.train_overrides("resnet50", 0)["data"]["kind"] == "imagenet"
    assert sorted(p.uses("resnet56", 0)) == ["figure6", "figure7", "table6"]


CLAIM_NETS = ["plain20", "plain56", "resnet20", "resnet56"]  # the CIFAR claims' nets (the demo's claim_seeds)


def test_paper_preset_asks_no_claim_seeds():
    p = plan()
    assert p.claim_runs() == [] and p.claims_shown() == {} and list(p.shown()) == [*TABLES, "figure7"]
    assert p.seed_groups() == {"resnet110": [0, 1, 2, 3, 4]} and p.seed_group_evaluations("resnet110") == ["table6"]
    # more seeds for the claims change no run's making: the config hash (recorded with every run) stays
    assert plan(claim_seeds={"plain20": [1]}).config_hash == p.config_hash
    assert plan(claim_seeds={"plain20": [1]}).claim_runs() == [("plain20", 0), ("plain20", 1)]


def test_demo_trains_three_seeds_of_the_claims_nets():
    """Seeds are the unit of evidence of the CIFAR claims: every seed of their nets is trained, evaluated
    (single view, with per-image scores) and, for Figure 7's nets, its layer responses measured; figures
    still draw the first seed, tables list every seed."""
    p = plan("demo")
    assert p.claim_runs() == [(m, s) for m in CLAIM_NETS for s in (0, 1, 2)]
    assert set(p.claim_runs()) <= set(p.all_runs()) and p.seeds("resnet110") == [0]
    for m in CLAIM_NETS:
        assert p.claim_files(m) == [
            "history.csv",
            "eval/single/metrics.json",
            "eval/single/scores-single.npz",
            "responses.csv",
        ]
    for figure in ("figure1", "figure6", "figure7"):
        assert {s for _, s in p.runs(figure)} == {0}
    assert p.runs("table6") == [
        ("resnet20", 0),
        ("resnet20", 1),
        ("resnet20", 2),
        ("resnet56", 0),
        ("resnet56", 1),
        ("resnet56", 2),
        ("resnet110", 0),
    ]
    shown = p.shown()
    assert shown["claims-single"] == (p.claim_runs(), "single")
    assert shown["claims-responses"] == (p.claim_runs(), None)
    assert list(p.claims_shown()) == ["claims-single", "claims-responses"]
    assert p.seed_groups() == {m: [0, 1, 2] for m in CLAIM_NETS}
    assert p.seed_group_evaluations("plain20") == ["claims-single"]
    assert p.seed_group_evaluations("resnet20") == ["table6", "claims-single"]
    assert p.uses("plain20", 0) == ["figure1", "figure6", "figure7"] and p.uses("plain20", 1) == ["report"]
    assert p.uses("resnet56", 2) == ["table6"]


def test_preset_entries_merge_over_the_top_level():
    p = plan("demo")
    o = p.train_overrides("resnet110", 1)
    # the family's settings, then the model's own (the demo's ResNet-110 warm-up check), then model and seed
    assert o["data"]["kind"] == "digits" and o["max_iters"] == 400 and o["batch_size"] == 64
    assert o["warmup"]["check_every"] == 20 and o["augment"] == {"pad": 2, "flip": False} and o["seed"] == 1
    assert ("resnet1202", 0) not in p.all_runs() and ("resnet110", 1) not in p.all_runs()
    assert p.resources("resnet20")["gpus"] == 0


def test_tracking_uri_from_environment_wins(monkeypatch):
    assert plan().tracking_uri == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert plan().tracking_uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "change,words",
    [
        ({"preset": "nope"}, "preset 'nope' is not defined"),
        ({"seeds": ["x"]}, "seeds.0"),
        ({"seedz": [1]}, "seedz"),
        ({"claim_seeds": {"plain20": [-1]}}, "claim_seeds.plain20.0"),
        ({"claim_seeds": {"plain21": [1]}}, "config: claim_seeds: "),
        ({"experiments": {"figure1": ["resnet21"]}}, "experiments.figure1"),
        ({"resources": {"cifar": {"threads": "four"}}}, "resources.cifar.threads"),
        ({"presets": {"paper": {"training": {"cifar": {}}, "typo_key": 1}}}, "typo_key"),
    ],
)
def test_config_errors_are_one_line(change, words):
    c = copy.deepcopy(CONFIG)
    c.update(change)
    with pytest.raises(ReproError) as e:
        Plan(c, SCHEMA)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_job_sizes_per_gpu_and_workers_from_cpus_per_process():
    p = plan()
    # an ImageNet training: 8 GPUs, 32 CPUs, 128 GB; its one-GPU jobs get an eighth of it
    assert p.one_gpu_resources("resnet50") == {"threads": 4, "mem_mb": 16000, "gpus": 1}
    assert p.one_gpu_resources("resnet56") == {"threads": 4, "mem_mb": 16000, "gpus": 1}
    assert p.threads_per_process("resnet50") == 4
    assert p.train_overrides("resnet50", 0)["data"]["workers"] == 3  # 4 CPUs a process, one its own
    assert "workers" not in p.train_overrides("resnet56", 0)["data"]  # CIFAR data is in memory
    demo = plan("demo")
    assert demo.train_overrides("resnet50", 0)["data"]["workers"] == 0  # set in config.yaml: kept
    assert demo.one_gpu_resources("resnet20") == {"threads": 1, "mem_mb": 2000, "gpus": 0}


def test_launchers_for_one_process_one_node_and_several_nodes():
    assert plan().launcher("resnet56") == ""
    assert plan().launcher("resnet50") == "torchrun --standalone --nproc_per_node=8 --no-python "
    resources = copy.deepcopy(CONFIG["resources"])
    resources["imagenet"].update(nodes=2)
    p = plan(resources=resources)
    assert p.processes_per_node("resnet50") == 4 and p.threads_per_process("resnet50") == 4
    assert p.launcher("resnet50") == (
        "srun --nodes=2 --ntasks-per-node=1 --cpus-per-task=16 --kill-on-bad-exit=1 "
        """sh -c 'trap "" USR1; exec "$0" "$@"' torchrun --nnodes=2 """
        "--nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=$(hostname):29400 --rdzv_id=${SLURM_JOB_ID:-0} "
        "--no-python "
    )
    resources["imagenet"].update(nodes=3)
    with pytest.raises(ReproError, match="8 gpus do not split evenly over 3 nodes"):
        plan(resources=resources)


def test_the_tests_preset_lives_outside_the_users_config():
    """config.yaml holds the user's presets only; tests/config/tiny.yaml adds the tests' and selects it
    when merged over config.yaml (`snakemake --configfile tests/config/tiny.yaml`), as the
    snakemake-workflows catalog keeps its .test/ configs out of the user's."""
    assert set(CONFIG["presets"]) == {"paper", "demo"} and CONFIG["preset"] == "paper"
    assert set(WITH_TINY["presets"]) == {"paper", "demo", "tiny"} and WITH_TINY["preset"] == "tiny"
    assert WITH_TINY["presets"]["demo"] == CONFIG["presets"]["demo"]  # merged over, nothing else changed
