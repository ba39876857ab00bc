"""A rates file for `resnet-repro estimate --rates` from a recorded `resnet-repro doctor` output: the
images/s doctor's estimate used per model (the rows of its table), which of them it measured (its
estimate line names them: the others it scaled by their GFLOPs), the card (its device line) and the
date the record was committed.

    python benchmarks/rates_from_doctor.py benchmarks/results/gpu-h100-doctor.txt benchmarks/results/rates-h100-doctor.json
"""

import argparse
import json
import re
import subprocess
from pathlib import Path


def rates(text):
    rows = re.findall(r"^\s+\| (\S+)\s+\d+\s+\d+\s+\d+\s+\d+\s+\S+\s+([\d.]+)\s+\S+\s+given", text, re.M)
    measured = re.search(r"estimate .*? from (.+?) as measured above", text)
    card = re.search(r"^ok\s+device\s+cuda \(([^)]+)\)", text, re.M)
    if not rows or not measured or not card:
        raise SystemExit("rates_from_doctor: not a doctor output with an estimate table on a GPU")
    return {
        "card": card.group(1),
        "rates": {m: float(v) for m, v in rows},
        "measured": measured.group(1).split(" and "),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("doctor_output")
    p.add_argument("rates_file")
    a = p.parse_args()
    r = rates(Path(a.doctor_output).read_text())
    date = subprocess.run(
        ["git", "log", "-1", "--format=%cs", "--", a.doctor_output], capture_output=True, text=True
    ).stdout.strip()
    r = {"card": r["card"], "date": date, "source": f"resnet-repro doctor, {a.doctor_output}", **r}
    Path(a.rates_file).write_text(json.dumps(r, indent=1) + "\n")
    print(f"{a.rates_file}: {len(r['rates'])} models, measured {', '.join(r['measured'])}")


if __name__ == "__main__":
    main()
