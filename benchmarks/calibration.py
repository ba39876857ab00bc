"""The report's promised error rates, measured with more trials than the test suite can afford: the same
simulations as tests/report/test_claims.py (through the project's own noise.compare, pool and combine), printing
the rate of false 'agrees' and false 'contradicts' per setting, paired and unpaired.

    python benchmarks/calibration.py --trials 3000      # about 4 minutes on 2 cores
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "report")]

from test_claims import error_rates  # noqa: E402

from resnet_repro.report.noise import ALPHA  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3000)
    args = p.parse_args()
    print(f"nominal rate per direction: {100 * ALPHA:.2f}%; trials per setting: {args.trials}")
    print("images seeds seed_sd(x binomial) | paired: agrees contradicts | unpaired: agrees contradicts")
    worst = 0.0
    for n in (450, 10000):
        for k in (1, 2, 3, 5):
            for sd in (0.0, 1.0, 3.0):
                r = error_rates(n, k, sd, args.trials, seed=k * 7919 + int(sd * 10) + n)
                worst = max(worst, *(v for p in r.values() for o, v in p.items() if o != "within noise"))
                cells = " | ".join(
                    f"{100 * r[p]['agrees']:.2f}% {100 * r[p]['contradicts']:.2f}%" for p in (True, False)
                )
                print(f"{n:>6} {k:>5} {sd:>4.1f} | {cells}", flush=True)
    print(f"worst false rate in one direction: {100 * worst:.2f}%")


if __name__ == "__main__":
    main()
