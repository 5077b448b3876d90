#!/usr/bin/env bash
# Tandem's one entry point: set-up, build, and the jobs a user runs.
#
#   ./launch.sh                     install what is missing, build, train configs/fashion-mnist-mlp-mirrored.json on 2 MPI ranks
#   ./launch.sh -np N CONFIG [ARGS] the same for any config and rank count (ARGS go to `tandem train`)
#   ./launch.sh CLUSTER.json [--dry-run] [ARGS]
#                                   a cluster job: every task of the config's "cluster" (or TF_CONFIG) with its own
#                                   TF_CONFIG, output prefixed with its role, logs in runs/NAME-TIME/
#   ./launch.sh test                same set-up, then the whole test suite
#   ./launch.sh bench               speed, accuracy, start-up and memory against the C floor (../shared/floor)
#   ./launch.sh train ARGS          build, then `tandem train ARGS` in one process
set -euo pipefail
cd "$(dirname "$0")"

SYSTEM_PACKAGES=(libopenmpi-dev openmpi-bin libopenblas-dev zlib1g-dev libpng-dev pkg-config dataset-fashion-mnist)
# The two-host cluster test builds network namespaces; the TLS test makes certificates.
TEST_PACKAGES=(iproute2 openssl)

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
    # Tests run this script against the binary they already built (a nested `swift build` would wait on their lock).
    if [ -n "${TANDEM_PREBUILT:-}" ]; then TANDEM="$TANDEM_PREBUILT"; return; fi
    command -v swift >/dev/null || die "no Swift toolchain on PATH (Swift 6 is needed: https://swift.org/install)"
    say "building (release)"
    swift build -c release "$@"
    TANDEM="$(swift build -c release --show-bin-path)/tandem"
    export TANDEM_BINARY="$TANDEM"
}

# mpirun as root, on more ranks than cores, and quick to end a job whose rank died: flags users never type.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_odls_base_sigkill_timeout=0

# mpirun -np N tandem train CONFIG ARGS; more ranks than cores are allowed (each rank then shares a core).
run_mirrored() {
    local ranks="$1"; shift
    [ $# -ge 1 ] || die "usage: ./launch.sh -np N CONFIG [tandem train flags]"
    [ -f "$1" ] || die "$1: no such config file"
    local placement=()
    [ "$ranks" -gt "$(nproc)" ] && placement+=(--oversubscribe)
    # Replica threads inside each rank need more than the one core mpirun would bind the rank to.
    case " $* " in *" --replicas "*) placement+=(--bind-to none) ;; esac
    mpirun -np "$ranks" "${placement[@]}" "$TANDEM" train "$@"
}

# Copies a task's output lines to the terminal as "[LABEL] line" and, bare, to its log FILE.
# mawk (Debian's awk) reads its input in blocks unless told it is interactive: lines would show up late.
awk_line_mode=()
awk -W version 2>&1 | grep -q mawk && awk_line_mode=(-W interactive)
tag_lines() {
    awk ${awk_line_mode[@]+"${awk_line_mode[@]}"} -v label="$1" -v file="$2" \
        '{ print "[" label "] " $0; fflush(); print >> file; fflush(file) }'
}

# A cluster job: `tandem cluster plan` lists the tasks; chief and workers become one mpirun job, one rank per task
# (in rank order, each with its own TF_CONFIG, on its own host); evaluators run beside it on this host, watching the
# checkpoints. Every output line is tagged with its task's role and kept in that task's log.
run_cluster() {
    local config="$1"; shift
    local dry_run=0 args=() checkpoints=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --dry-run) dry_run=1 ;;
            --checkpoint-dir) [ $# -ge 2 ] || die "--checkpoint-dir needs a folder"; checkpoints="$2"; args+=("$1" "$2"); shift ;;
            *) args+=("$1") ;;
        esac
        shift
    done
    local plan
    plan="$("$TANDEM" cluster plan "$config")" || exit 1
    local run_dir
    run_dir="${TANDEM_RUNS:-runs}/$(basename "$config" .json)-$(date +%Y%m%d-%H%M%S)"
    if [ "${plan%%$'\t'*}" = parameter_server ]; then
        # The chief checkpoints every epoch (evaluators watch the folder).
        [ -n "$checkpoints" ] || args+=(--checkpoint-dir "$run_dir/checkpoints")
        run_task_processes "$config" "$plan" "$run_dir" "$dry_run" ${args[@]+"${args[@]}"}
        return
    fi
    local strategy labels=() hosts=() tf_configs=() evaluators=() evaluator_configs=()
    while IFS=$'\t' read -r strategy role index host port tf_config; do
        case "$role" in
            chief|worker) labels+=("$role $index"); hosts+=("$host"); tf_configs+=("$tf_config") ;;
            evaluator)    evaluators+=("$role $index"); evaluator_configs+=("$tf_config") ;;
            *)            say "not starting $role $index: the mirrored strategy has no use for it" ;;
        esac
    done <<<"$plan"
    # Evaluators evaluate each checkpoint as training writes it: training must write some.
    if [ ${#evaluators[@]} -gt 0 ] && [ -z "$checkpoints" ]; then
        checkpoints="$run_dir/checkpoints"
        args+=(--checkpoint-dir "$checkpoints")
    fi
    # Each host gets as many slots as tasks it runs; a task's context names its host with that count.
    declare -A slots=()
    for host in "${hosts[@]}"; do slots[$host]=$(( ${slots[$host]:-0} + 1 )); done
    local host_list="" contexts=() rank
    for host in "${!slots[@]}"; do host_list+="${host_list:+,}$host:${slots[$host]}"; done
    for rank in "${!labels[@]}"; do
        [ "$rank" -gt 0 ] && contexts+=(:)
        contexts+=(-np 1 -H "${hosts[$rank]}:${slots[${hosts[$rank]}]}" -x "TF_CONFIG=${tf_configs[$rank]}"
                   "$TANDEM" train "$config" ${args[@]+"${args[@]}"})
        if [ $dry_run = 1 ]; then
            printf '[%s] rank %d on %s: TF_CONFIG=%s %s train %s %s\n' "${labels[$rank]}" "$rank" "${hosts[$rank]}" \
                "${tf_configs[$rank]}" "$TANDEM" "$config" "${args[*]-}"
        fi
    done
    local command=(mpirun --host "$host_list" --tag-output --bind-to none "${contexts[@]}")
    local i
    if [ $dry_run = 1 ]; then
        for i in "${!evaluators[@]}"; do
            printf '[%s] on this host: TF_CONFIG=%s %s evaluate %s --watch %s\n' "${evaluators[$i]}" "${evaluator_configs[$i]}" \
                "$TANDEM" "$config" "$checkpoints"
        done
        printf 'command:'; printf ' %q' "${command[@]}"; printf '\n'
        return
    fi
    mkdir -p "$run_dir"
    for label in "${labels[@]}" ${evaluators[@]+"${evaluators[@]}"}; do : >"$run_dir/${label// /-}.log"; done
    say "cluster job: $(( ${#labels[@]} + ${#evaluators[@]} )) tasks, logs in $run_dir"
    local side_cars=()
    for i in "${!evaluators[@]}"; do
        local log="$run_dir/${evaluators[$i]// /-}.log"
        TF_CONFIG="${evaluator_configs[$i]}" "$TANDEM" evaluate "$config" --watch "$checkpoints" --timeout 300 \
            > >(tag_lines "${evaluators[$i]}" "$log") 2>&1 &
        side_cars+=($!)
    done
    # Lines arrive as "[job,rank]<stdout>: text": replace the tag by the task's role, and keep one log per task.
    local roles
    roles="$(printf '%s\n' "${labels[@]}")"
    "${command[@]}" > >(awk ${awk_line_mode[@]+"${awk_line_mode[@]}"} -v roles="$roles" -v dir="$run_dir" '
        BEGIN { n = split(roles, label, "\n") }
        match($0, /^\[[0-9]+,[0-9]+\]<std(out|err)>: ?/) {
            tag = substr($0, 2, index($0, "]") - 2); split(tag, part, ","); r = part[2] + 1
            text = substr($0, RLENGTH + 1)
            file = dir "/" label[r] ".log"; gsub(/ /, "-", file)
            print "[" label[r] "] " text; fflush()
            print text >> file; fflush(file)
            next
        }
        { print; fflush() }') 2>&1 &
    local job=$!
    trap 'kill -TERM "$job" ${side_cars[@]+"${side_cars[@]}"} 2>/dev/null' INT TERM
    local status=0
    wait "$job" || status=$?
    # A signal interrupts wait: wait again for mpirun to stop its ranks.
    while kill -0 "$job" 2>/dev/null; do wait "$job" || status=$?; done
    # Evaluators finish with the last checkpoint; after a failed training there will be none.
    for i in "${!side_cars[@]}"; do
        [ $status -eq 0 ] || kill -KILL "${side_cars[$i]}" 2>/dev/null || true
        local side_status=0
        wait "${side_cars[$i]}" || side_status=$?
        if [ $status -eq 0 ] && [ $side_status -ne 0 ]; then status=$side_status; say "${evaluators[$i]} failed (exit $side_status)"; fi
    done
    trap - INT TERM
    wait 2>/dev/null || true
    [ $status -eq 0 ] || say "cluster job failed (exit $status); logs in $run_dir"
    return $status
}

# A parameter-server job: every task that lives on this host is its own process (ps tasks, workers, the chief,
# evaluators), started with its TF_CONFIG and the job's random token (TANDEM_JOB_TOKEN: the ps refuse requests
# without it). The chief decides when the job ends; then the others get a moment to notice and are stopped.
run_task_processes() {
    local config="$1" plan="$2" run_dir="$3" dry_run="$4"; shift 4
    local args=("$@") token
    token="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    local strategy role index host port tf_config labels=() pids=() chief_pid=""
    [ "$dry_run" = 1 ] || { mkdir -p "$run_dir"; say "parameter-server job, logs in $run_dir"; }
    while IFS=$'\t' read -r strategy role index host port tf_config; do
        local label="$role $index" command=("$TANDEM" train "$config" ${args[@]+"${args[@]}"})
        [ "$role" = evaluator ] && command=("$TANDEM" evaluate "$config" --watch "${checkpoints:-$run_dir/checkpoints}" --timeout 300)
        if [ "$host" != localhost ]; then
            say "not starting $label: it lives on $host (start it there with this TF_CONFIG: $tf_config)"
            continue
        fi
        if [ "$dry_run" = 1 ]; then
            printf '[%s] TANDEM_JOB_TOKEN=<random> TF_CONFIG=%s' "$label" "$tf_config"; printf ' %q' "${command[@]}"; printf '\n'
            continue
        fi
        local log="$run_dir/${label// /-}.log"
        : >"$log"
        TANDEM_JOB_TOKEN="$token" TF_CONFIG="$tf_config" "${command[@]}" \
            > >(tag_lines "$label" "$log") 2>&1 &
        pids+=($!); labels+=("$label")
        [ "$role" = chief ] && chief_pid=$!
    done <<<"$plan"
    [ "$dry_run" = 1 ] && return
    [ -n "$chief_pid" ] || die "$config: no chief on this host to lead the job"
    trap 'kill -TERM "${pids[@]}" 2>/dev/null' INT TERM
    local status=0 i failed=()
    wait "$chief_pid" || status=$?
    # The ps tasks stop by themselves once the chief has stopped the job, the workers when they hear of it; a task
    # still running after that is stopped here, which is not a failure of that task.
    local deadline=$((SECONDS + 10))
    for i in "${!pids[@]}"; do
        [ "${pids[$i]}" = "$chief_pid" ] && continue
        while kill -0 "${pids[$i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        local stopped_here=0 task_status=0
        kill -0 "${pids[$i]}" 2>/dev/null && { stopped_here=1; kill -KILL "${pids[$i]}" 2>/dev/null || true; }
        wait "${pids[$i]}" || task_status=$?
        if [ "$task_status" -ne 0 ] && [ $stopped_here = 0 ]; then
            failed+=("${labels[$i]} $(describe_exit "$task_status")")
            say "${labels[$i]} $(describe_exit "$task_status")"
        fi
    done
    trap - INT TERM
    wait 2>/dev/null || true
    # One meaning for the exit status: the chief's. A parameter-server job tolerates dead workers (TensorFlow's
    # ParameterServerStrategy does too), so a job whose chief finished exits 0 even if a task died on the way; the
    # last line names the tasks that failed.
    local failures=""
    [ ${#failed[@]} -eq 0 ] || failures="; $(IFS=';'; echo "${failed[*]}" | sed 's/;/, /g') along the way"
    if [ $status -eq 0 ]; then
        say "parameter-server job finished: the chief completed the training${failures}; logs in $run_dir"
    else
        say "parameter-server job failed: chief 0 $(describe_exit "$status")${failures}; logs in $run_dir"
    fi
    return $status
}

# "exited with status N" or "was killed by SIGNAME" for a status from bash's `wait` (128 + N means signal N).
describe_exit() {
    if [ "$1" -gt 128 ] && [ "$1" -lt 160 ]; then
        echo "was killed by SIG$(kill -l $(($1 - 128)) 2>/dev/null || echo $(($1 - 128)))"
    else
        echo "exited with status $1"
    fi
}

run_tests() {
    build --build-tests
    # The examples are a package of their own that depends on this one by path, as a user's package would.
    say "building the examples package (Examples/Package.swift)"
    swift build -c release --package-path Examples
    say "running tests"
    swift test -c release --skip-build
}

run_bench() {
    build
    local floor="${FLOOR_DIR:-../shared/floor}"
    [ -x "$floor/bin/floor_mlp" ] || { [ -f "$floor/build.sh" ] && (cd "$floor" && bash build.sh >/dev/null); } \
        || die "no floor at $floor (set FLOOR_DIR)"
    local rounds="${BENCH_ROUNDS:-5}" out kernels default_kernels
    out="$(mktemp -d)"
    say "benchmark: $rounds rounds, floor and tandem alternating in each (medians reported; raw files in $out)"
    # The floor runs the OpenBLAS kernels Tandem runs (Tandem replaces OpenBLAS's fallback for a CPU it does not know:
    # Sources/TandemCore/BLASKernelChoice.swift), so the ratio compares loops, not kernels; one floor run per round
    # keeps OpenBLAS's own choice, to show what that choice costs.
    kernels="$("$TANDEM" train configs/fashion-mnist-mlp.json --epochs 1 --progress silent -v 2>&1 | sed -n 's/.*OpenBLAS kernels //p' | head -n 1)"
    default_kernels="$(env -u OPENBLAS_CORETYPE OPENBLAS_VERBOSE=2 "$floor/bin/floor_mlp" --model relu --epochs 1 2>&1 | sed -n 's/^Core: //p' | head -n 1)"
    say "OpenBLAS kernels: ${kernels:-unknown} for tandem and the floor (OpenBLAS alone would choose ${default_kernels:-unknown})"
    [ -n "$kernels" ] && export OPENBLAS_CORETYPE="$kernels"
    echo "{\"tandem\": \"$kernels\", \"openblas_default\": \"$default_kernels\"}" >"$out/kernels.json"
    for round in $(seq 1 "$rounds"); do
        for model in relu tanh; do
            local config=configs/fashion-mnist-mlp.json
            [ "$model" = tanh ] && config=configs/fashion-mnist-tanh.json
            "$floor/bin/floor_mlp" --model "$model" | tail -1 >"$out/floor-$model-$round.json"
            # Two floors at once, one per core as mpirun places two ranks: what a step costs with both cores busy.
            for core in 0 1; do
                taskset -c "$core" "$floor/bin/floor_mlp" --model "$model" | tail -1 >"$out/floor-$model-busy$core-$round.json" &
            done
            wait
            env -u OPENBLAS_CORETYPE "$floor/bin/floor_mlp" --model "$model" | tail -1 >"$out/floor-default-$model-$round.json"
            "$TANDEM" train "$config" --seed "$round" --progress silent --metrics "$out/tandem-$model-$round.jsonl"
        done
        mpirun -np 2 "$TANDEM" train configs/fashion-mnist-mlp-mirrored.json --seed "$round" --progress silent \
            --metrics "$out/mirrored-relu-$round.jsonl" >/dev/null
        mpirun -np 2 "$TANDEM" train configs/fashion-mnist-mlp-mirrored.json --reduction-groups 4 --seed "$round" \
            --progress silent --metrics "$out/grouped-relu-$round.jsonl" >/dev/null
        mpirun -np 2 "$TANDEM" train configs/fashion-mnist-tanh.json --batch-size 128 --seed "$round" --progress silent \
            --metrics "$out/mirrored-tanh-$round.jsonl" >/dev/null
        "$TANDEM" train configs/fashion-mnist-tanh.json --replicas 2 --batch-size 128 --seed "$round" --progress silent \
            --metrics "$out/threads-tanh-$round.jsonl"
        "$TANDEM" train configs/fashion-mnist-mlp.json --replicas 2 --seed "$round" --progress silent \
            --metrics "$out/threads-relu-$round.jsonl"
        # The parameter-server job (1 ps, 2 workers, chief) on its own ports; the chief writes the metrics.
        (TF_CONFIG='{"cluster":{"chief":["localhost:2530"],"worker":["localhost:2531","localhost:2532"],"ps":["localhost:2533"]}}' \
            TANDEM_RUNS="$out/runs-$round" run_cluster configs/cluster-ps.json --seed "$round" --metrics "$out/ps-$round.jsonl") >/dev/null 2>&1
        for floats in 15910 42310; do
            mpirun -np 2 "$floor/bin/floor_allreduce" --floats "$floats" --iters 2000 | tail -1 >"$out/allreduce-$floats-$round.json"
        done
    done
    # Accuracy is a property of the recipe, not of one seed (seed-to-seed spread ~0.7 points at global batch 128):
    # the 2-rank job over more seeds than the timing rounds gave.
    local seeds="${BENCH_ACCURACY_SEEDS:-20}"
    [ "$seeds" -gt "$rounds" ] && say "2-rank accuracy over seeds $((rounds + 1))..$seeds as well"
    for seed in $(seq $((rounds + 1)) "$seeds"); do
        mpirun -np 2 "$TANDEM" train configs/fashion-mnist-mlp-mirrored.json --seed "$seed" --progress silent \
            --metrics "$out/mirrored-relu-$seed.jsonl" >/dev/null
    done
    # TensorFlow's own strategies on the same job, once, where a Python with TensorFlow is at hand
    # (benchmarks/tensorflow/README.md); otherwise the figures the issues quote.
    local tf_python="${TANDEM_TF_PYTHON:-/opt/tf-venv/bin/python}"
    if [ -x "$tf_python" ]; then
        say "TensorFlow reference runs (benchmarks/tensorflow, once each)"
        "$tf_python" benchmarks/tensorflow/ps_strategy.py 2>/dev/null | tail -n 1 >"$out/tf-ps.json" || rm -f "$out/tf-ps.json"
        "$tf_python" benchmarks/tensorflow/mirrored_strategy.py 2>/dev/null | tail -n 1 >"$out/tf-mwms.json" || rm -f "$out/tf-mwms.json"
    fi
    python3 - "$out" "$rounds" "$seeds" <<'PY'
import glob, json, os, re, statistics, sys
out, rounds, seeds = sys.argv[1], int(sys.argv[2]), max(int(sys.argv[3]), int(sys.argv[2]))
median = statistics.median
def tensorflow(job, quoted):  # TensorFlow's median of epochs 2..N when measured in this run, else the quoted figure
    path = f"{out}/tf-{job}.json"
    if os.path.exists(path) and os.path.getsize(path):
        return median(json.load(open(path))["epoch_seconds"][1:]), "measured now"
    return quoted, "quoted"
tf_mwms, tf_mwms_source = tensorflow("mwms", 8.0)
tf_ps, tf_ps_source = tensorflow("ps", 3.6)
def summary(path):
    return [json.loads(line) for line in open(path)][-1]
def epoch(record):  # the floor reports the median of epochs 2..N; do the same
    return median(record["epoch_seconds"][1:] or record["epoch_seconds"])
def spread(values):
    return f"{median(values):.4f} [{min(values):.4f}-{max(values):.4f}]"

def floor_epoch(model, r, busy=False):  # alone, or (busy) the slower of two floors running at once
    if busy:
        return max(json.load(open(f"{out}/floor-{model}-busy{core}-{r}.json"))["epoch_seconds_median"] for core in (0, 1))
    return json.load(open(f"{out}/floor-{model}-{r}.json"))["epoch_seconds_median"]
def floor_weak_scaling(model, r, allreduce_us=0):
    # What the floor's own loop would give at 2 ranks against 1: half the steps, each a step with both cores busy plus
    # one raw all-reduce (on one host the all-reduce is CPU work on the same cores: it does not overlap for free).
    busy_step = floor_epoch(model, r, busy=True) / (60000 // 64)
    return (60000 // 128) * (busy_step + allreduce_us * 1e-6) / floor_epoch(model, r)

print(f"One process, one BLAS thread ({rounds} rounds; accuracy over seeds 1..{rounds}; the floor on tandem's OpenBLAS kernels)")
print(f"{'model':6} {'floor s/epoch':>13} {'tandem s/epoch':>14} {'ratio':>6} {'samples/s':>10} {'test accuracy':>24} "
      f"{'floor acc':>9} {'startup s':>9} {'floor':>6} {'RSS MB':>7}")
for model in ("relu", "tanh"):
    rows = [(json.load(open(f"{out}/floor-{model}-{r}.json")), summary(f"{out}/tandem-{model}-{r}.jsonl")) for r in range(1, rounds + 1)]
    ratio = median(epoch(t) / f["epoch_seconds_median"] for f, t in rows)
    print(f"{model:6} {median(f['epoch_seconds_median'] for f, _ in rows):13.4f} {median(epoch(t) for _, t in rows):14.4f} "
          f"{ratio:5.2f}x {median(t['samples_per_sec'] for _, t in rows):10.0f} {spread([t['test_accuracy'] for _, t in rows]):>24} "
          f"{median(f['test_accuracy'] for f, _ in rows):9.4f} {median(t['startup_seconds'] for _, t in rows):9.3f} "
          f"{median(f['startup_seconds'] for f, _ in rows):6.3f} {median(t['peak_rss_bytes'] / 1e6 for _, t in rows):7.1f}")
kernels = json.load(open(f"{out}/kernels.json"))
if kernels["tandem"] != kernels["openblas_default"]:
    for model in ("relu", "tanh"):
        rows = [(json.load(open(f"{out}/floor-default-{model}-{r}.json")), summary(f"{out}/tandem-{model}-{r}.jsonl")) for r in range(1, rounds + 1)]
        print(f"{model:6} the floor with OpenBLAS's own kernels ({kernels['openblas_default']}): "
              f"{median(f['epoch_seconds_median'] for f, _ in rows):.4f} s/epoch; tandem ({kernels['tandem']}) "
              f"{median(epoch(t) / f['epoch_seconds_median'] for f, t in rows):.2f}x of it")

print()
print("Two MPI ranks (mpirun -np 2), global batch 128")
for model, floats in (("relu", 15910), ("tanh", 42310)):
    rows = []
    for r in range(1, rounds + 1):
        one, two = summary(f"{out}/tandem-{model}-{r}.jsonl"), summary(f"{out}/mirrored-{model}-{r}.jsonl")
        raw = json.load(open(f"{out}/allreduce-{floats}-{r}.json"))
        rows.append((epoch(two), epoch(two) / epoch(one), two["allreduce_us"], two["allreduce_us"] / raw["median_us"], raw["median_us"], two["test_accuracy"],
                     two.get("straggler_wait_us", 0), floor_weak_scaling(model, r, raw["median_us"])))
    column = lambda i: [row[i] for row in rows]
    print(f"{model:6} 2-rank s/epoch {median(column(0)):.4f}  vs 1 rank at batch 64: {median(column(1)):.2f}x  "
          f"all-reduce/step {median(column(2)):.1f} us = {median(column(3)):.2f}x raw MPI_Allreduce of {floats} floats ({median(column(4)):.1f} us), "
          f"+{median(column(6)):.1f} us waiting for the slower rank; the floor's step with both cores busy + that raw all-reduce would give {median(column(7)):.2f}x  "
          f"test accuracy {spread(column(5))}"
          + (f"  vs TensorFlow MWMS {tf_mwms:.2f} s/epoch ({tf_mwms_source}): {tf_mwms / median(column(0)):.0f}x" if model == "relu" else ""))

accuracies = [summary(f"{out}/mirrored-relu-{seed}.jsonl")["test_accuracy"] for seed in range(1, seeds + 1)]
print(f"relu   2-rank test accuracy over seeds 1..{seeds}: median {median(accuracies):.4f}, mean {statistics.mean(accuracies):.4f}, "
      f"sd {statistics.stdev(accuracies) if seeds > 1 else 0:.4f}, {sum(a >= 0.845 for a in accuracies)} of {seeds} at 84.5% or more")
grouped = [epoch(summary(f"{out}/grouped-relu-{r}.jsonl")) / epoch(summary(f"{out}/mirrored-relu-{r}.jsonl")) for r in range(1, rounds + 1)]
print(f"relu   --reduction-groups 4 at 2 ranks: {median(grouped):.2f}x the epoch time of the fused all-reduce")

print()
print("Two replica threads in one process (--replicas 2)")
rows = [(epoch(summary(f"{out}/threads-tanh-{r}.jsonl")), epoch(summary(f"{out}/tandem-tanh-{r}.jsonl")),
         summary(f"{out}/threads-tanh-{r}.jsonl")["allreduce_us"]) for r in range(1, rounds + 1)]
print(f"tanh   batch 128: {median(row[0] for row in rows):.4f} s/epoch = {median(row[0] / row[1] for row in rows):.2f}x one replica at batch 64; "
      f"exchange/step {median(row[2] for row in rows):.1f} us; the floor's step with both cores busy and a free exchange would give "
      f"{median(floor_weak_scaling('tanh', r) for r in range(1, rounds + 1)):.2f}x")
accuracies = [summary(f"{out}/threads-relu-{r}.jsonl")["test_accuracy"] for r in range(1, rounds + 1)]
print(f"relu   config as is (global batch 64), 5 epochs: test accuracy {spread(accuracies)}")

print()
print("Parameter server over gRPC: 1 ps + 2 workers + chief, each its own process (configs/cluster-ps.json)")
rows = [(epoch(summary(f"{out}/ps-{r}.jsonl")), epoch(summary(f"{out}/tandem-relu-{r}.jsonl")), summary(f"{out}/ps-{r}.jsonl")["test_accuracy"])
        for r in range(1, rounds + 1)]
print(f"relu   {median(row[0] for row in rows):.4f} s per epoch of pushes = {median(row[0] / row[1] for row in rows):.2f}x one process's epoch; "
      f"vs TensorFlow ParameterServerStrategy {tf_ps:.2f} s/epoch ({tf_ps_source}): {tf_ps / median(row[0] for row in rows):.1f}x; test accuracy {spread([row[2] for row in rows])}")
def logged(round, task, pattern):  # the figures a task's last log line matching `pattern` reports
    for path in glob.glob(f"{out}/runs-{round}/*/{task}.log"):
        found = [re.search(pattern, line) for line in open(path, encoding="utf-8")]
        found = [match for match in found if match]
        if found:
            return [float(group) for group in found[-1].groups()]
    return None
cpu = []
for r in range(1, rounds + 1):
    ps = logged(r, "ps-0", r"(\d+) µs of CPU per push")
    workers = [logged(r, f"worker-{i}", r"per step (\d+) µs of gradients, \d+ µs exchanging with the ps; (\d+) µs of CPU") for i in (0, 1)]
    if ps and all(workers):
        cpu.append((ps[0], median(w[0] for w in workers), median(w[1] for w in workers)))
if cpu:
    ps_cpu, gradients, worker_cpu = (median(row[i] for row in cpu) for i in range(3))
    steps, cores = 60000 // 64, os.cpu_count()
    print(f"       CPU per step: ps {ps_cpu:.0f} us per push, worker {worker_cpu:.0f} us ({gradients:.0f} us of it gradients, "
          f"{worker_cpu - gradients:.0f} us the rest: gRPC, batches); an epoch's {steps} steps need {steps * (ps_cpu + worker_cpu) / 1e6:.2f} CPU-seconds, "
          f"{steps * (ps_cpu + worker_cpu) / cores / 1e6:.2f} s on {cores} cores even with perfect overlap; "
          f"without the gradients {steps * (ps_cpu + worker_cpu - gradients) / cores / 1e6:.2f} s")
PY
}

case "${1:-}" in
    "")        install_system_packages; build; run_mirrored 2 configs/fashion-mnist-mlp-mirrored.json ;;
    -np)       [ $# -ge 3 ] || die "usage: ./launch.sh -np N CONFIG [tandem train flags]"
               ranks="$2"; shift 2; install_system_packages; build; run_mirrored "$ranks" "$@" ;;
    test)      SYSTEM_PACKAGES+=("${TEST_PACKAGES[@]}"); install_system_packages; run_tests ;;
    bench)     install_system_packages; run_bench ;;
    train)     shift; install_system_packages; build >/dev/null; "$TANDEM" train "$@" ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
    *.json)    [ -f "$1" ] || die "$1: no such config file"
               config="$1"; shift; install_system_packages; build >&2; run_cluster "$config" "$@" ;;
    *)         die "unknown command '$1' (try ./launch.sh --help)" ;;
esac
