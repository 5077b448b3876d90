#!/usr/bin/env bash
# Tandem's one entry point: set-up, build, and the jobs a user runs.
#
#   ./launch.sh              install what is missing, build, train configs/fashion-mnist-mlp.json
#   ./launch.sh test         same set-up, then the whole test suite
#   ./launch.sh bench        speed, accuracy, start-up and memory against the C floor (../shared/floor)
#   ./launch.sh train ARGS   build, then `tandem train ARGS`
set -euo pipefail
cd "$(dirname "$0")"

SYSTEM_PACKAGES=(libopenmpi-dev openmpi-bin libopenblas-dev zlib1g-dev libpng-dev pkg-config dataset-fashion-mnist)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'launch.sh: error: %s\n' "$*" >&2; exit 1; }

install_system_packages() {
    local missing=()
    for package in "${SYSTEM_PACKAGES[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return
    local run=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "missing packages ${missing[*]}; install them as root (apt-get install ${missing[*]})"
        run=(sudo)
    fi
    say "installing ${missing[*]}"
    "${run[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
    command -v swift >/dev/null || die "no Swift toolchain on PATH (Swift 6 is needed: https://swift.org/install)"
    say "building (release)"
    swift build -c release "$@"
    TANDEM="$(swift build -c release --show-bin-path)/tandem"
    export TANDEM_BINARY="$TANDEM"
}

# mpirun as root, on more ranks than cores, and quick to end a job whose rank died: flags users never type.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_odls_base_sigkill_timeout=0

run_tests() {
    build --build-tests
    say "running tests"
    swift test -c release --skip-build
}

run_bench() {
    build
    local floor="${FLOOR_DIR:-../shared/floor}"
    [ -x "$floor/bin/floor_mlp" ] || { [ -f "$floor/build.sh" ] && (cd "$floor" && bash build.sh >/dev/null); } \
        || die "no floor at $floor (set FLOOR_DIR)"
    local rounds="${BENCH_ROUNDS:-5}" out
    out="$(mktemp -d)"
    say "benchmark: $rounds rounds, floor and tandem alternating (medians reported)"
    for round in $(seq 1 "$rounds"); do
        for model in relu tanh; do
            local config=configs/fashion-mnist-mlp.json
            [ "$model" = tanh ] && config=configs/fashion-mnist-tanh.json
            "$floor/bin/floor_mlp" --model "$model" | tail -1 >"$out/floor-$model-$round.json"
            "$TANDEM" train "$config" --seed "$round" --progress silent --metrics "$out/tandem-$model-$round.jsonl"
        done
    done
    python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
median = statistics.median
print(f"{'model':6} {'floor s/epoch':>13} {'tandem s/epoch':>14} {'ratio':>6} {'tandem samples/s':>16} "
      f"{'accuracy (seeds 1..%d)' % rounds:>24} {'floor acc':>9} {'startup s':>9} {'floor startup':>13} {'RSS MB':>7}")
for model in ("relu", "tanh"):
    ratios, epochs, floors, rates, accuracies, startups, floor_startups, rss, floor_acc = ([] for _ in range(9))
    for r in range(1, rounds + 1):
        floor = json.load(open(f"{out}/floor-{model}-{r}.json"))
        records = [json.loads(line) for line in open(f"{out}/tandem-{model}-{r}.jsonl")]
        summary = records[-1]
        epoch = median(summary["epoch_seconds"][1:] or summary["epoch_seconds"])
        ratios.append(epoch / floor["epoch_seconds_median"])
        epochs.append(epoch); floors.append(floor["epoch_seconds_median"])
        rates.append(summary["samples_per_sec"]); accuracies.append(summary["test_accuracy"])
        startups.append(summary["startup_seconds"]); floor_startups.append(floor["startup_seconds"])
        rss.append(summary["peak_rss_bytes"] / 1e6); floor_acc.append(floor["test_accuracy"])
    acc = f"{median(accuracies):.4f} [{min(accuracies):.4f}-{max(accuracies):.4f}]"
    print(f"{model:6} {median(floors):13.4f} {median(epochs):14.4f} {median(ratios):5.2f}x {median(rates):16.0f} "
          f"{acc:>24} {median(floor_acc):9.4f} {median(startups):9.3f} {median(floor_startups):13.3f} {median(rss):7.1f}")
PY
}

case "${1:-}" in
    "")        install_system_packages; build; "$TANDEM" train configs/fashion-mnist-mlp.json ;;
    test)      install_system_packages; run_tests ;;
    bench)     install_system_packages; run_bench ;;
    train)     shift; install_system_packages; build >/dev/null; "$TANDEM" train "$@" ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' ;;
    *)         die "unknown command '$1' (try ./launch.sh --help)" ;;
esac
