#!/usr/bin/env bash
# Back to back on one machine: the SpeechBrain peer harness (own venv: ../shared/peers/setup.sh), then
# `asr-s2s bench`, then the peer's peak.py; the 1-minute load average before each; ratios at the end.
#   usage: bash bench/compare_peer.sh [OUTDIR]     (env: PEERS, VENV; BENCH_ARGS, e.g. "--set amp=bf16")
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-../shared/peers}
VENV=${VENV:-/tmp/peers-venv}
OUT=${1:-bench/out}
mkdir -p "$OUT"
echo "peer  $(uptime)" | tee "$OUT/load.txt"
"$VENV/bin/python" "$PEERS/speechbrain_an4.py" --cnn-pooling 2d --budget-min 4 --max-epochs 2 --out-prefix "$OUT/speechbrain" >/dev/null
echo "ours  $(uptime)" | tee -a "$OUT/load.txt"
python -m asr_s2s.cli bench ${BENCH_ARGS:-} --json "$OUT/asr_s2s.json" | tee "$OUT/asr_s2s.txt"
echo "peak  $(uptime)" | tee -a "$OUT/load.txt"
"$VENV/bin/python" "$PEERS/peak.py" --json "$OUT/peak.json" | tee "$OUT/peak.txt"
python bench/compare.py "$OUT/speechbrain.json" "$OUT/asr_s2s.json" "$OUT/peak.json" | tee "$OUT/compare.txt"
