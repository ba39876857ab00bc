#!/bin/bash
# fp32 against bf16 autocast: ResNet-20 at CIFAR's shapes (the bundled digits, resized to 32x32), the
# same seeds, a few thousand iterations each, through the trainer (resnet-repro train).
#   bash benchmarks/precision.sh OUT_DIR [ITERS] [SEEDS]
# Prints one line per run: precision, seed, final training loss, test error; then the mean per precision.
set -u
out=${1:?output directory}; iters=${2:-3000}; seeds=${3:-"0 1"}
mkdir -p "$out"
for seed in $seeds; do
  for p in fp32 bf16; do
    python3 -m resnet_repro train --model resnet20 --data digits --image-size 32 --max-iters "$iters" \
      --milestones "$((iters / 2)),$((iters * 3 / 4))" --log-every "$((iters / 6))" --checkpoint-every "$iters" \
      --batch-size 128 --seed "$seed" --precision "$p" --set compile=false --out "$out/$p-seed$seed" \
      > "$out/$p-seed$seed.json" 2> "$out/$p-seed$seed.log" || { echo "$p seed $seed failed"; tail -3 "$out/$p-seed$seed.log"; }
  done
done
python3 - "$out" <<'PY'
import json, pathlib, statistics, sys
rows = {}
for f in sorted(pathlib.Path(sys.argv[1]).glob("*-seed*.json")):
    try:
        m = json.loads(f.read_text())
    except ValueError:
        continue
    p = m["precision"]
    rows.setdefault(p, []).append(m)
    print(f"{p} {f.stem}: train loss {m['train_loss']:.4f}, train error {m['train_error']:.2f}%, "
          f"{m['test_split']} error {m['test_error']:.2f}%, {m['images_per_s']:.0f} img/s, graph {m.get('cuda_graph')}")
for p, ms in rows.items():
    errs = [m["test_error"] for m in ms]
    print(f"{p}: mean test error {statistics.mean(errs):.2f}% over {len(errs)} seed(s) {errs}, "
          f"mean train loss {statistics.mean(m['train_loss'] for m in ms):.4f}")
PY
