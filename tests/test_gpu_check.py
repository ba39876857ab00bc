"""benchmarks/gpu_check.sh, the one call a lent GPU gets, run here at small sizes on the CPU: every stage
finishes within its cap and gpu-check.json holds their numbers, so the script cannot fail for a typo
on the day a GPU is lent."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_gpu_check_runs_every_stage_at_small_sizes_on_the_cpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    r = subprocess.run(
        ["bash", ROOT / "benchmarks" / "gpu_check.sh", "--tiny", "--out", tmp_path],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "=== gpu_check summary" in r.stdout and (tmp_path / "summary.txt").exists()
    record = json.loads((tmp_path / "gpu-check.json").read_text())
    assert record["commit"] and record["versions"]["torch"] and record["card"] is None  # a CPU
    exits = {n["benchmark"]: n["value"] for n in record["numbers"] if n["stage"] == "exit"}
    assert exits == {"imagenet_stages.py": 0, "ghost_bn.py": 0, "train_throughput.py": 0, "rates.py": 0}, exits
    stages = {n["stage"]: n for n in record["numbers"] if n["benchmark"] == "imagenet_stages"}
    for name in ("decode", "crop_roi_align", "crop_per_image_resize", "step", "end_to_end_current_stream"):
        assert stages[name]["value"] > 0, name
    assert stages["crop_roi_align"]["mean_abs_levels"] < 1.5  # the batched crop, the same draws as a resize
    assert 0 < stages["end_to_end_current_stream"]["of_step"] <= 1.2
    ratios = {n["benchmark"]: n["value"] for n in record["numbers"] if n["stage"] == "ratio"}
    assert set(ratios) == {"ghost_bn.py", "train_throughput.py"} and all(v > 0 for v in ratios.values())
    # a rates file `estimate --rates` reads: every model of the (tests') preset timed, the packing gains
    from resnet_repro.preflight.estimate import read_rates

    rates = read_rates(tmp_path / "rates.json")
    assert set(rates["measured"]) == set(rates["rates"]) and "resnet1202" in rates["rates"]
    assert set(rates["packing"]) == {"2", "4"} and all(v > 0 for v in rates["packing"].values())
    assert rates["packing_mps"].startswith("not measured")  # no GPU, no MPS daemon here
