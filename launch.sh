#!/usr/bin/env bash
# Tandem's one entry point: set-up, build, and the jobs a user runs.
#
#   ./launch.sh                     install what is missing, build, train configs/fashion-mnist-mlp-mirrored.json on 2 MPI ranks
#   ./launch.sh -np N CONFIG [ARGS] the same for any config and rank count (ARGS go to `tandem train`)
#   ./launch.sh CLUSTER.json [--dry-run] [ARGS]
#                                   a cluster job: every task of the config's "cluster" (or TF_CONFIG) with its own
#                                   TF_CONFIG, output prefixed with its role, logs in runs/NAME-TIME/
#                                   Inside a Slurm allocation (salloc, sbatch) both start as one Slurm job step (srun).
#   ./launch.sh test                same set-up, then the whole test suite
#   ./launch.sh bench               speed, accuracy, start-up and memory against the C floor (../shared/floor)
#   ./launch.sh train ARGS          build, then `tandem train ARGS` in one process
set -euo pipefail
cd "$(dirname "$0")"

SYSTEM_PACKAGES=(libopenmpi-dev openmpi-bin libopenblas-dev zlib1g-dev libpng-dev pkg-config dataset-fashion-mnist)
# The two-host cluster test builds network namespaces; the TLS test makes certificates; the Slurm tests run a
# private Slurm cluster (munged, slurmctld, slurmd) on this machine.
TEST_PACKAGES=(iproute2 openssl slurm-wlm munge)

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

# Inside a Slurm allocation (salloc, sbatch: SLURM_JOB_ID set) jobs start as Slurm job steps with srun: Slurm places
# the tasks on the allocation's nodes and PMIx connects the MPI ranks, with no hostfile and no ssh. Anywhere else, and
# inside a job step (`srun ./launch.sh`: a nested srun would start a step inside a step), mpirun.
# TANDEM_LAUNCHER=mpirun chooses mpirun in an allocation too. Sets `launcher` and, for the first line, `launcher_why`.
choose_launcher() {
    launcher=mpirun
    if [ "${TANDEM_LAUNCHER:-}" = mpirun ]; then launcher_why="TANDEM_LAUNCHER=mpirun"
    elif [ -z "${SLURM_JOB_ID:-}" ]; then launcher_why="not in a Slurm allocation"
    elif [ -n "${SLURM_STEP_ID:-}" ]; then launcher_why="inside Slurm job step $SLURM_JOB_ID.$SLURM_STEP_ID, which cannot start a step of its own"
    elif ! command -v srun >/dev/null; then launcher_why="SLURM_JOB_ID is set but srun is not on PATH"
    else
        launcher=srun
        launcher_why="Slurm allocation $SLURM_JOB_ID (${SLURM_NTASKS:-?} tasks on ${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-?}} nodes)"
    fi
}

# Names the launcher, why it was chosen, and the command, as the job's first line.
announce() {
    local command
    command="$(printf ' %q' "$@")"
    if [ "$launcher" = srun ]; then say "$launcher_why:$command"; else say "mpirun ($launcher_why):$command"; fi
}

# mpirun -np N tandem train CONFIG ARGS (more ranks than cores are allowed: each rank then shares a core), or in a
# Slurm allocation srun --mpi=pmix -n N: a rank that dies ends the step at once (--kill-on-bad-exit), as under mpirun.
run_mirrored() {
    local ranks="$1"; shift
    [ $# -ge 1 ] || die "usage: ./launch.sh -np N CONFIG [tandem train flags]"
    [ -f "$1" ] || die "$1: no such config file"
    choose_launcher
    local command
    if [ "$launcher" = srun ]; then
        command=(srun --mpi=pmix -n "$ranks" --kill-on-bad-exit=1 "$TANDEM" train "$@")
    else
        local placement=()
        [ "$ranks" -gt "$(nproc)" ] && placement+=(--oversubscribe)
        # Replica threads inside each rank need more than the one core mpirun would bind the rank to.
        case " $* " in *" --replicas "*) placement+=(--bind-to none) ;; esac
        command=(mpirun -np "$ranks" "${placement[@]}" "$TANDEM" train "$@")
    fi
    announce "${command[@]}"
    "${command[@]}"
}

# Copies a task's output lines to the terminal as "[LABEL] line" and, bare, to its log FILE.
# mawk (Debian's awk) reads its input in blocks unless told it is interactive: lines would show up late.
awk_line_mode=()
awk -W version 2>&1 | grep -q mawk && awk_line_mode=(-W interactive)
tag_lines() {
    awk ${awk_line_mode[@]+"${awk_line_mode[@]}"} -v label="$1" -v file="$2" \
        '{ print "[" label "] " $0; fflush(); print >> file; fflush(file) }'
}

# A cluster job: `tandem cluster plan` lists the tasks. Under mpirun, chief and workers become one mpirun job, one
# rank per task (in rank order, each with its own TF_CONFIG, on its own host), and a parameter-server job's tasks are
# processes on this host (run_task_processes). In a Slurm allocation every task of either strategy is a task of one
# srun step, in the plan's order, each reading its role from Slurm (SLURM_PROCID). Evaluators run beside the job on
# this host, watching the checkpoints. Every output line is tagged with its task's role and kept in that task's log.
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
    choose_launcher
    local plan
    if [ "$launcher" = srun ]; then
        plan="$("$TANDEM" cluster plan "$config")" || exit 1
    else
        # mpirun's tasks take their places from the cluster section (or TF_CONFIG), not from an allocation around them.
        plan="$(env -u SLURM_JOB_ID -u SLURM_JOBID "$TANDEM" cluster plan "$config")" || exit 1
    fi
    local run_dir
    run_dir="${TANDEM_RUNS:-runs}/$(basename "$config" .json)-$(date +%Y%m%d-%H%M%S)"
    local job_strategy="${plan%%$'\t'*}"
    if [ "$job_strategy" = parameter_server ] && [ -z "$checkpoints" ]; then
        # The chief checkpoints every epoch (evaluators watch the folder).
        checkpoints="$run_dir/checkpoints"
        args+=(--checkpoint-dir "$checkpoints")
    fi
    if [ "$job_strategy" = parameter_server ] && [ "$launcher" = mpirun ]; then
        run_task_processes "$config" "$plan" "$run_dir" "$dry_run" ${args[@]+"${args[@]}"}
        return
    fi
    local strategy labels=() hosts=() ports=() tf_configs=() evaluators=() evaluator_configs=()
    while IFS=$'\t' read -r strategy role index host port tf_config; do
        case "$role" in
            chief|worker|ps) labels+=("$role $index"); hosts+=("$host"); ports+=("$port"); tf_configs+=("$tf_config") ;;
            evaluator)       evaluators+=("$role $index"); evaluator_configs+=("$tf_config") ;;
        esac
    done <<<"$plan"
    # Evaluators evaluate each checkpoint as training writes it: training must write some.
    if [ ${#evaluators[@]} -gt 0 ] && [ -z "$checkpoints" ]; then
        checkpoints="$run_dir/checkpoints"
        args+=(--checkpoint-dir "$checkpoints")
    fi
    local command=() rank
    if [ "$launcher" = srun ]; then
        if [ "$job_strategy" = mirrored ]; then
            # One MPI rank per task (PMIx); a rank that dies ends the step at once, as under mpirun.
            command=(srun --mpi=pmix --kill-on-bad-exit=1 -n "${#labels[@]}" --label "$TANDEM" train "$config" ${args[@]+"${args[@]}"})
        else
            # No MPI; a dead worker leaves the others running (the job tolerates it). Each task reports its end on a
            # last line, so this script learns when the chief has ended the job (and which step to cancel).
            export TANDEM_JOB_TOKEN
            TANDEM_JOB_TOKEN="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
            command=(srun --mpi=none --kill-on-bad-exit=0 -n "${#labels[@]}" --label /bin/sh -c
                     '"$@"; status=$?; echo "tandem-task-ended $SLURM_JOB_ID.$SLURM_STEP_ID $status"; exit $status'
                     sh "$TANDEM" train "$config" ${args[@]+"${args[@]}"})
        fi
        if [ $dry_run = 1 ]; then
            for rank in "${!labels[@]}"; do
                printf '[%s] Slurm task %d on %s, port %s\n' "${labels[$rank]}" "$rank" "${hosts[$rank]}" "${ports[$rank]}"
            done
        fi
    else
        # Each host gets as many slots as tasks it runs; a task's context names its host with that count.
        declare -A slots=()
        for host in "${hosts[@]}"; do slots[$host]=$(( ${slots[$host]:-0} + 1 )); done
        local host_list="" contexts=()
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
        command=(mpirun --host "$host_list" --tag-output --bind-to none "${contexts[@]}")
    fi
    local i
    if [ $dry_run = 1 ]; then
        for i in "${!evaluators[@]}"; do
            printf '[%s] on this host: TF_CONFIG=%s %s evaluate %s --watch %s\n' "${evaluators[$i]}" "${evaluator_configs[$i]}" \
                "$TANDEM" "$config" "$checkpoints"
        done
        printf 'command:'; printf ' %q' "${command[@]}"; printf '\n'
        return
    fi
    announce "${command[@]}"
    mkdir -p "$run_dir"
    for label in "${labels[@]}" ${evaluators[@]+"${evaluators[@]}"}; do : >"$run_dir/${label// /-}.log"; done
    say "cluster job: $(( ${#labels[@]} + ${#evaluators[@]} )) tasks, logs in $run_dir"
    local side_cars=()
    for i in "${!evaluators[@]}"; do
        local log="$run_dir/${evaluators[$i]// /-}.log" tf_config="${evaluator_configs[$i]}"
        [ "$tf_config" = - ] && tf_config=""
        TF_CONFIG="$tf_config" "$TANDEM" evaluate "$config" --watch "$checkpoints" --timeout 300 \
            > >(tag_lines "${evaluators[$i]}" "$log") 2>&1 &
        side_cars+=($!)
    done
    # mpirun tags lines "[job,rank]<stdout>: text", srun --label "rank: text" (padded): replace the tag by the task's
    # role and keep one log per task. A task's "tandem-task-ended STEP STATUS" line (Slurm parameter-server jobs) is
    # not output: it names a failed task, and the chief's is written to chief-ended for the loop below.
    local roles chief_ended="$run_dir/.chief-ended"
    roles="$(printf '%s\n' "${labels[@]}")"
    "${command[@]}" > >(awk ${awk_line_mode[@]+"${awk_line_mode[@]}"} -v roles="$roles" -v dir="$run_dir" -v ended="$chief_ended" '
        BEGIN { n = split(roles, label, "\n") }
        function emit(r, text,    file) {
            file = dir "/" label[r] ".log"; gsub(/ /, "-", file)
            print "[" label[r] "] " text; fflush()
            print text >> file; fflush(file)
        }
        match($0, /^\[[0-9]+,[0-9]+\]<std(out|err)>: ?/) {
            tag = substr($0, 2, index($0, "]") - 2); split(tag, part, ",")
            emit(part[2] + 1, substr($0, RLENGTH + 1))
            next
        }
        match($0, /^ *[0-9]+: /) {
            r = substr($0, 1, RLENGTH - 2) + 1; text = substr($0, RLENGTH + 1)
            if (r > n) { print; fflush(); next }
            if (text ~ /^tandem-task-ended /) {
                split(text, field, " ")
                if (field[3] != 0 && label[r] != "chief 0") { print "==> " label[r] " ended with exit " field[3] > "/dev/stderr"; fflush("/dev/stderr") }
                if (label[r] == "chief 0") { print field[2] > ended; close(ended) }
                next
            }
            emit(r, text)
            next
        }
        { print; fflush() }') 2>&1 &
    local job=$!
    trap 'kill -TERM "$job" ${side_cars[@]+"${side_cars[@]}"} 2>/dev/null' INT TERM
    # The chief decides when a parameter-server job ends: the ps and workers stop when they hear of it; a task still
    # running 10 s after the chief ended is stopped with the step (scancel), so nothing outlives the job.
    local stop_at="" cancelled=0
    while kill -0 "$job" 2>/dev/null; do
        if [ -z "$stop_at" ] && [ -s "$chief_ended" ]; then stop_at=$((SECONDS + 10)); fi
        if [ -n "$stop_at" ] && [ $SECONDS -ge "$stop_at" ]; then
            if [ $cancelled = 0 ]; then
                say "tasks still running 10 s after the chief ended the job: cancelling step $(cat "$chief_ended")"
                scancel "$(cat "$chief_ended")" 2>/dev/null || true
                cancelled=1; stop_at=$((SECONDS + 10))
            else
                kill -KILL "$job" 2>/dev/null || true
            fi
        fi
        sleep 0.2
    done
    local status=0
    wait "$job" || status=$?
    rm -f "$chief_ended"
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
    [ "$dry_run" = 1 ] || { mkdir -p "$run_dir"; say "parameter-server job, a process per task ($launcher_why), logs in $run_dir"; }
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
    local status=0 i
    wait "$chief_pid" || status=$?
    # The ps tasks stop by themselves once the chief has stopped the job, the workers when they hear of it.
    local deadline=$((SECONDS + 10))
    for i in "${!pids[@]}"; do
        while kill -0 "${pids[$i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -KILL "${pids[$i]}" 2>/dev/null || true
        local task_status=0
        wait "${pids[$i]}" || task_status=$?
        if [ "$task_status" -ne 0 ] && [ "${pids[$i]}" != "$chief_pid" ]; then
            say "${labels[$i]} ended with exit $task_status"
            [ $status -ne 0 ] || status=$task_status
        fi
    done
    trap - INT TERM
    wait 2>/dev/null || true
    [ $status -eq 0 ] || say "parameter-server job: a task failed (exit $status); logs in $run_dir"
    return $status
}

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
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
    *.json)    [ -f "$1" ] || die "$1: no such config file"
               config="$1"; shift; install_system_packages; build >&2; run_cluster "$config" "$@" ;;
    *)         die "unknown command '$1' (try ./launch.sh --help)" ;;
esac
