#!/usr/bin/env bash
# The one device check (../docs/speed.md; the design: where GPU time goes): every stage of the
# pipeline's GPU path measured in one call of at most 8 minutes, each stage under a cap of its own, the
# path as it was before (no side stream, one resize per image, ghost BN's loop) re-measured in the same
# call as the baseline, a summary printed last whatever fails, and OUT/gpu-check.json with every number,
# the card, driver, versions, commit and date; OUT/rates.json, each model's step and the packing gain, for
# `resnet-repro estimate --rates` (the README's cost block).
#
#   bash benchmarks/gpu_check.sh [--out DIR]            # on a GPU machine (DIR: $OUT, else benchmarks/results/gpu-check)
#   bash benchmarks/gpu_check.sh --tiny --out DIR       # the same stages at small sizes on a CPU (a test runs it)
set -uo pipefail
cd "$(dirname "$0")/.."
tiny=0 out="${OUT:-benchmarks/results/gpu-check}"
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) tiny=1 ;;
        --out) out="$2"; shift ;;
        *) echo "usage: $0 [--tiny] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
lines="$out/stages.jsonl" log="$out/gpu-check.log"
: > "$lines"
: > "$log"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-$(command -v python3)}"
[ -x .venv/bin/python ] && PY="${PYTHON:-.venv/bin/python}"
# the commit: GIT_COMMIT where the tree was copied without its .git, else git's
export GIT_COMMIT="${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)}"
if [ "$tiny" = 0 ] && ! "$PY" -c 'import torch, torchvision, torchcodec; assert torch.cuda.is_available()' 2>> "$log"; then
    echo "gpu_check: $PY lacks torch, torchvision, torchcodec or a CUDA device (see $log); nothing measured" >&2
    exit 3
fi

if [ "$tiny" = 1 ]; then
    device=cpu caps=(180 180 180 180)  # generous: a busy 2-core machine
    stages=("imagenet_stages.py --tiny --device cpu --workers 1 --batches 3 --windows 3"
        "ghost_bn.py --device cpu --model resnet20 --batch-size 32 --group 16 --iters 1 --repeats 3"
        "train_throughput.py --device cpu --models resnet20 --images 512 --iters 2 --warmup 1 --repeats 1"
        "rates.py --tiny --device cpu --iters 1 --warmup 1 --pack-iters 3 --batch 8 --out $out")
else
    device=cuda caps=(200 50 90 130)
    stages=("imagenet_stages.py --device cuda --workers $(($(nproc) - 1)) --batches 40 --windows 3"
        "ghost_bn.py --device cuda --model resnet56"
        "train_throughput.py --device cuda --models resnet20,resnet56 --compile false"
        "rates.py --device cuda --iters 10 --warmup 3 --out $out")
fi

status=()
worst=0  # the script's exit status: the worst stage's
summary() {
    {
        echo "=== gpu_check summary ($out) ==="
        for s in "${status[@]}"; do echo "$s"; done
        grep -h -E "^(jpeg_kib|decode|crop_|step|batches_|end_to_end_|rate |packing_)" "$log" || true
    } | tee "$out/summary.txt"
}
trap summary EXIT

stage() {  # stage CAP SCRIPT ARGS...: one benchmark under its cap, its output in the log
    local cap="$1" script="$2"
    shift 2
    echo "--- $script $*" >> "$log"
    local t0=$SECONDS rc
    timeout "$cap" "$PY" "benchmarks/$script" "$@" >> "$log" 2>&1
    rc=$?
    status+=("$script: exit $rc in $((SECONDS - t0)) s (cap $cap s); last line: $(tail -n 1 "$log")")
    [ "$rc" -gt "$worst" ] && worst=$rc
    "$PY" - "$script" "$rc" "$((SECONDS - t0))" >> "$lines" <<'EOF'
import json, sys
print(json.dumps({"benchmark": sys.argv[1], "stage": "exit", "value": int(sys.argv[2]), "seconds": int(sys.argv[3])}))
EOF
}

for i in "${!stages[@]}"; do
    read -r -a args <<< "${stages[$i]}"
    script="${args[0]}"
    extra=()
    [ "$script" = imagenet_stages.py ] && extra=(--json "$lines")
    stage "${caps[$i]}" "$script" "${args[@]:1}" "${extra[@]}"
done

"$PY" - "$out" "$device" <<'EOF' >> "$log" 2>&1
import json, platform, subprocess, sys, time
from pathlib import Path

import torch

out, device = Path(sys.argv[1]), sys.argv[2]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
log = (out / "gpu-check.log").read_text()
numbers = [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines() if line]
for name in ("ghost_bn.py", "train_throughput.py"):  # their last line: ratio: X.XX
    part = log.split(f"--- {name}", 1)[-1].split("\n--- ", 1)[0] if f"--- {name}" in log else ""
    ratios = [l.split()[-1] for l in part.splitlines() if l.startswith("ratio:")]
    if ratios:
        numbers.append({"benchmark": name, "stage": "ratio", "value": float(ratios[-1])})
cuda = torch.cuda.is_available() and device == "cuda"
def torchcodec_version():
    try:
        return __import__("torchcodec").__version__
    except Exception:  # not installed, or its libraries do not load
        return None
record = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    "commit": __import__("os").environ.get("GIT_COMMIT") or None,
    "card": torch.cuda.get_device_name(0) if cuda else None,
    "driver": run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader") if cuda else None,
    "cpu": platform.processor() or platform.machine(),
    "cores": len(__import__("os").sched_getaffinity(0)),
    "versions": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                 "torchvision": __import__("torchvision").__version__, "torchcodec": torchcodec_version()},
    "jpeg_decoder": __import__("resnet_repro.data.decode", fromlist=["x"]).jpeg_decoder(),
    "numbers": numbers,
}
(out / "gpu-check.json").write_text(json.dumps(record, indent=1) + "\n")
print(f"written {out / 'gpu-check.json'}: {len(numbers)} numbers")
EOF
exit "$worst"
