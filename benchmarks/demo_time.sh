#!/usr/bin/env bash
# Time `make demo` from a fresh clone of this checkout's HEAD, in a temporary directory (your results/
# are never touched): the venv, then the demo DAG.
#
#   bash benchmarks/demo_time.sh                # as this CPU trains (precision: auto)
#   bash benchmarks/demo_time.sh --emulate-avx2 # oneDNN and ATen held to AVX2, every training in fp32:
#                                               # an emulation of a CPU without AVX512-BF16 (a real
#                                               # AVX2-only CPU may be slower; see docs/speed.md)
# Prints the CPU kind, the two times, and where the clone is (delete it when done).
set -euo pipefail
emulate=false
case "${1:-}" in
    --emulate-avx2) emulate=true ;;
    "") ;;
    *) echo "usage: $0 [--emulate-avx2]" >&2; exit 2 ;;
esac
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=$(mktemp -d /tmp/resnet-repro-demo-time.XXXXXX)
git clone -q "$repo" "$work/repo"
cd "$work/repo"
echo "commit $(git rev-parse --short HEAD); CPU flags: $(lscpu | grep -o avx512_bf16 | head -1 || echo "no avx512_bf16")"
t0=$(date +%s)
make venv >"$work/venv.log" 2>&1
t1=$(date +%s)
args=(all --config preset=demo)
envs=(PATH="$work/repo/.venv/bin:$PATH")
if $emulate; then
    printf 'presets:\n  demo:\n    training:\n      cifar: {precision: fp32}\n      imagenet: {precision: fp32}\n' >"$work/fp32.yaml"
    args+=(--configfile "$work/fp32.yaml")
    envs+=(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)
fi
env "${envs[@]}" snakemake "${args[@]}" >"$work/demo.log" 2>&1
t2=$(date +%s)
precisions=$(grep -h '"precision"' results/runs/demo/*/seed*/metrics.json | sort | uniq -c | tr -s ' ' | tr '\n' ';')
echo "emulate_avx2=$emulate venv: $(( (t1 - t0) / 60 ))m$(( (t1 - t0) % 60 ))s demo DAG: $(( (t2 - t1) / 60 ))m$(( (t2 - t1) % 60 ))s trainings:$precisions"
echo "clone and logs: $work"
