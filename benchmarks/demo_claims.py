"""Are the demo's verdicts stable across seeds? Train the CIFAR-family networks of the demo's Figures 1,
6 and 7 (whatever config.yaml's `demo` preset lists there) with several seeds, exactly as `make demo`
trains them (the same spec, through the same `resnet-repro train` command), then judge the CIFAR
claims of the paper with the report's own rule: on all seeds together (the report's view: the seeds are
the unit of evidence) and on each seed's runs alone (one run of each net and no pool to borrow a seed
variance from: the rule then says "too little data to say (one seed)", which is the point), and print,
per claim, how many seeds give each verdict.

    python benchmarks/demo_claims.py                      # seeds 0,1,2; 2 trainings at a time
    python benchmarks/demo_claims.py --seeds 0,1,2,3,4 --jobs 2 --out /tmp/demo-claims

About 3x the CIFAR part of `make demo`. Runs are kept under --out, and a run
already finished there is reused, so an interrupted benchmark continues where it stopped.
The last lines are one per claim: `<claim>: <n>/<seeds> <verdict>, ...`.
"""

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from resnet_repro.paper.text import reference  # noqa: E402
from resnet_repro.plan import Plan  # noqa: E402
from resnet_repro.report import build as report  # noqa: E402

CLAIMS = ["degradation_cifar", "residual_fix_cifar", "depth_gain_cifar", "small_responses"]


def run(cmd, log):
    with open(log, "a") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if proc.returncode != 0:
        sys.exit(f"demo_claims: {' '.join(cmd[:3])} failed (exit {proc.returncode}); see {log}")


def train_and_measure(plan, model, seed, out):
    """Train one network as the demo does, then evaluate it (single view) and its layer responses."""
    d = out / f"seed{seed}" / model / f"seed{seed}"
    log = out / "logs" / f"{model}-seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "resnet_repro"]
    if not (d / "model.pt").exists():
        overrides = json.dumps(plan.train_overrides(model, seed))
        run(cli + ["train", "--overrides", overrides, "--out", str(d), "--resume", "--threads", "1"], log)
    if not (d / "eval" / "single" / "metrics.json").exists():
        run(cli + ["evaluate", str(d / "model.pt"), "--out", str(d / "eval" / "single"), "--threads", "1"], log)
    if not (d / "responses.csv").exists():
        run(cli + ["responses", str(d / "model.pt"), "--out", str(d / "responses.csv"), "--threads", "1"], log)
    return d


def verdicts_of(runs_dirs, name, out):
    """The report's verdict on each CIFAR claim from these runs (Table 6 built from them): one seed's
    runs, or every seed's together (the seeds' spread then enters the noise, as in the report)."""
    from resnet_repro.report.tables import make_table, write_table

    table = out / name / "table6.csv"
    write_table(make_table("table6", [d for d in runs_dirs if "resnet" in d.parent.name]), "table6", table, "demo")
    tables, runs = report.read_tables([table]), report.Runs(runs_dirs)
    claims = {c["id"]: c for c in reference()["claims"]}
    return {cid: report.judge(claims[cid], tables, runs, "demo") for cid in CLAIMS}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--jobs", type=int, default=2, help="trainings at a time, one thread each (default 2)")
    p.add_argument("--out", default="results/benchmarks/demo-claims", help="where the runs are kept")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["preset"] = "demo"
    plan = Plan(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    out = Path(args.out).resolve()
    models = sorted(
        {m for a in ("figure1", "figure6", "figure7") for m, _ in plan.runs(a)},
        key=lambda m: (m.startswith("resnet"), int("".join(filter(str.isdigit, m)))),
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{', '.join(models)} x {len(seeds)} seeds, demo preset (config hash {plan.config_hash})",
        flush=True,
    )
    start = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        # the deepest first, so the two lanes end together
        jobs = sorted(((m, s) for s in seeds for m in models), key=lambda ms: -int("".join(filter(str.isdigit, ms[0]))))
        dirs = dict(zip(jobs, pool.map(lambda ms: train_and_measure(plan, *ms, out), jobs)))
    print(f"trained and evaluated in {time.time() - start:.0f} s", flush=True)
    per_claim = collections.defaultdict(list)
    for seed in seeds:
        judged = verdicts_of([dirs[(m, seed)] for m in models], f"seed{seed}", out)
        errors = {m: json.loads((dirs[(m, seed)] / "metrics.json").read_text()) for m in models}
        print(
            f"seed {seed}: "
            + ", ".join(f"{m} train {e['train_error']:.1f} test {e['test_error']:.1f}" for m, e in errors.items())
        )
        for cid, v in judged.items():
            per_claim[cid].append(v["verdict"])
            comps = "; ".join(f"{c['claim']}: {c['outcome']} (d {c['difference']:+.2f})" for c in v["comparisons"])
            print(f"  {cid}: {v['verdict_text']} [{comps}]")
    if len(seeds) > 1:  # the report's view of the same runs: all seeds of a model as one measure
        print(f"all {len(seeds)} seeds together:")
        for cid, v in verdicts_of(list(dirs.values()), "all-seeds", out).items():
            comps = "; ".join(
                f"{c['claim']}: {c['outcome']} (d {c['difference']:+.2f}, {c['critical'] or 0:.2f} x sd "
                f"{c['noise_std'] or float('nan'):.2f})"
                for c in v["comparisons"]
            )
            print(f"  {cid}: {v['verdict_text']} [{comps}]")
            per_claim[cid + " (seeds together)"] = [v["verdict"]]
    for cid in CLAIMS:
        counts = collections.Counter(per_claim[cid])
        print(f"{cid}: " + ", ".join(f"{n}/{len(seeds)} {v}" for v, n in counts.most_common()))
        if per_claim.get(cid + " (seeds together)"):
            print(f"{cid} (seeds together): {per_claim[cid + ' (seeds together)'][0]}")


if __name__ == "__main__":
    main()
