"""The planned DAG of `snakemake -n -p all` for each preset, as sorted lines: every job's rule, inputs,
outputs, log, benchmark, wildcards, resources and shell command. A refactoring must leave them as they
are: a changed shell string, input or output reruns users' finished trainings (GPU-weeks on the paper
preset). `tests/dag/<preset>.txt` holds the record; `tests/test_dag.py` diffs against it.

    python benchmarks/dag_lines.py --check          # diff today's plans against the record
    python benchmarks/dag_lines.py --write          # record them (a change the diff shows in review)
"""

import argparse
import difflib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "dag"
PRESETS = ("paper", "demo", "tiny")
# how each preset is chosen: the user's from config.yaml, the tests' from a config file merged over it
CHOOSE = {
    "paper": ["--configfile", ROOT / "config.yaml", "--config", "preset=paper"],
    "demo": ["--configfile", ROOT / "config.yaml", "--config", "preset=demo"],
    "tiny": ["--configfile", ROOT / "config.yaml", ROOT / "tests" / "config" / "tiny.yaml"],
}
# the fields of a job that decide what runs and what reruns (jobid, reason and the date do not)
FIELDS = ("input", "output", "log", "benchmark", "wildcards", "resources")
LISTS = ("input", "output", "resources")  # order within them is Snakemake's, not the workflow's


def dry_run(preset, workdir, target="all"):
    # a user's site settings or tracking server would change the lines: plan as a fresh machine would
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESNET_", "MLFLOW_", "SLURM_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    r = subprocess.run(
        [Path(sys.executable).parent / "snakemake", "-n", "-p", target, "-s", ROOT / "Snakefile"]
        + ["--directory", workdir, *CHOOSE[preset]],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
    )
    if r.returncode != 0:
        sys.exit(f"dag_lines: snakemake -n {target} (preset {preset}) failed:\n{r.stderr[-3000:]}")
    return r.stdout


def jobs(text):
    """One line per planned job: its rule, then its fields and shell command, in a fixed order."""
    out, job = [], None
    for line in text.splitlines():
        s = line.strip()
        if line.startswith(("rule ", "localrule ")):
            job = {"rule": line.split()[1].rstrip(":")}
        elif job is not None and s.split(":", 1)[0] in FIELDS:
            key, value = s.split(":", 1)
            items = [v.strip() for v in value.split(", ")]
            if key == "resources":
                items = [i for i in items if not i.startswith("tmpdir=")]
            job[key] = ", ".join(sorted(items) if key in LISTS else items)
        elif job is not None and s.startswith("Shell command:"):
            job["shell"] = s.split(":", 1)[1].strip()
            out.append(" | ".join(f"{k}: {job[k]}" for k in ("rule", *FIELDS, "shell") if k in job))
            job = None
    return sorted(out)


def lines(preset):
    with tempfile.TemporaryDirectory() as work:
        return jobs(dry_run(preset, work))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="record today's plans in tests/dag/")
    p.add_argument("--check", action="store_true", help="diff today's plans against tests/dag/ (exit 1 on a change)")
    p.add_argument("presets", nargs="*", default=PRESETS)
    a = p.parse_args()
    changed = 0
    for preset in a.presets:
        now = lines(preset)
        if not now:
            sys.exit(f"dag_lines: no job planned for preset {preset}")
        path = RECORD / f"{preset}.txt"
        if a.write:
            RECORD.mkdir(exist_ok=True)
            path.write_text("\n".join(now) + "\n")
            print(f"{path.relative_to(ROOT)}: {len(now)} jobs")
            continue
        before = path.read_text().splitlines() if path.exists() else []
        diff = list(difflib.unified_diff(before, now, f"record/{preset}", f"now/{preset}", lineterm="", n=0))
        changed += bool(diff)
        print("\n".join(diff) if diff else f"{preset}: {len(now)} jobs, as recorded")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
