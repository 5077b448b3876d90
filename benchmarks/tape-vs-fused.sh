#!/bin/sh
# The custom training loop on the arena tape (Examples/FashionTape) against the fused trainer (`tandem train
# configs/fashion-mnist-mlp.json`): the same model, batch, initial weights and OpenBLAS kernels, one process, one
# BLAS thread. The two run alternately, ROUNDS times each, so both see the same machine load; each run reports the
# median of its epochs 2..EPOCHS (the first warms up), and the ratio is of the medians over the rounds.
#
#   benchmarks/tape-vs-fused.sh [ROUNDS=5] [EPOCHS=6]      (after swift build -c release)
set -eu
cd "$(dirname "$0")/.."
rounds=${1:-5}
epochs=${2:-6}
bin=.build/release
metrics=$(mktemp)
trap 'rm -f "$metrics"' EXIT

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int(NR / 2) + 1] }'; }

fused_all="" tape_all=""
for round in $(seq "$rounds"); do
    rm -f "$metrics"
    "$bin/tandem" train configs/fashion-mnist-mlp.json --epochs "$epochs" --progress silent --metrics "$metrics" >/dev/null
    # The summary record lists every epoch's seconds: drop the first, take the median of the rest.
    fused=$(grep '"summary"' "$metrics" | sed 's/.*"epoch_seconds":\[\([^]]*\)\].*/\1/' | tr ',' '\n' | tail -n +2 | median)
    tape=$("$bin/FashionTapeExample" "$epochs" | sed -n 's/^median epoch \([0-9.]*\) s.*/\1/p')
    printf 'round %d: fused %.4f s  tape %.4f s  ratio %.3f\n' "$round" "$fused" "$tape" "$(echo "$tape $fused" | awk '{ print $1 / $2 }')"
    fused_all="$fused_all $fused" tape_all="$tape_all $tape"
done
fused=$(echo "$fused_all" | tr ' ' '\n' | grep . | median)
tape=$(echo "$tape_all" | tr ' ' '\n' | grep . | median)
printf 'median epoch (epochs 2-%d, %d rounds): fused trainer %.4f s, arena tape %.4f s, ratio %.3f\n' \
    "$epochs" "$rounds" "$fused" "$tape" "$(echo "$tape $fused" | awk '{ print $1 / $2 }')"
