#!/usr/bin/env bash
# Tandem's one entry point: set-up, build, and the jobs a user runs.
#
#   ./launch.sh                     install what is missing, build, train configs/fashion-mnist-mlp-mirrored.json on 2 MPI ranks
#   ./launch.sh -np N CONFIG [ARGS] the same for any config and rank count (ARGS go to `tandem train`)
#   ./launch.sh CLUSTER.json [--dry-run] [ARGS]
#                                   a cluster job: every task of the config's "cluster" (or TF_CONFIG) with its own
#                                   TF_CONFIG, output prefixed with its role, logs in runs/NAME-TIME/
#                                   Inside a Slurm allocation (salloc, sbatch) both start as one Slurm job step (srun).
#                                   A parameter-server job exits with the chief's status; its last line names tasks that died.
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
    local roles chief_ended="$run_dir/.chief-ended" failures_file="$run_dir/.failed-tasks"
    roles="$(printf '%s\n' "${labels[@]}")"
    "${command[@]}" > >(awk ${awk_line_mode[@]+"${awk_line_mode[@]}"} -v roles="$roles" -v dir="$run_dir" -v ended="$chief_ended" -v failures="$failures_file" '
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
                if (label[r] == "chief 0") { print field[2], field[3] > ended; close(ended) }
                else if (field[3] != 0) { print label[r] "\t" field[3] >> failures; close(failures) }
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
                say "tasks still running 10 s after the chief ended the job: cancelling step $(cut -d' ' -f1 "$chief_ended")"
                scancel "$(cut -d' ' -f1 "$chief_ended")" 2>/dev/null || true
                cancelled=1; stop_at=$((SECONDS + 10))
            else
                kill -KILL "$job" 2>/dev/null || true
            fi
        fi
        sleep 0.2
    done
    local status=0
    wait "$job" || status=$?
    if [ "$job_strategy" = parameter_server ]; then
        # The exit status is the chief's, as for the job's processes on this host (run_task_processes).
        local chief_status
        chief_status="$(cut -s -d' ' -f2 "$chief_ended" 2>/dev/null || true)"
        status="${chief_status:-$status}"
        local failed=() label task_status
        if [ -f "$failures_file" ]; then
            while IFS=$'\t' read -r label task_status; do failed+=("$label $(describe_exit "$task_status")"); done <"$failures_file"
        fi
        [ $cancelled = 1 ] && failed+=("the tasks still running were stopped with the step")
        rm -f "$failures_file"
    fi
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
    if [ "$job_strategy" = parameter_server ]; then
        report_parameter_server_job "$status" "$run_dir" ${failed[@]+"${failed[@]}"}
    else
        [ $status -eq 0 ] || say "cluster job failed (exit $status); logs in $run_dir"
    fi
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
        if [ "$task_status" -ne 0 ] && [ $stopped_here = 0 ]; then failed+=("${labels[$i]} $(describe_exit "$task_status")"); fi
    done
    trap - INT TERM
    wait 2>/dev/null || true
    report_parameter_server_job "$status" "$run_dir" ${failed[@]+"${failed[@]}"}
    return $status
}

# The last line of a parameter-server job: report_parameter_server_job STATUS RUN_DIR [FAILURE...].
# One meaning for the exit status: the chief's. A parameter-server job tolerates dead workers (TensorFlow's
# ParameterServerStrategy does too), so a job whose chief finished exits 0 even if a task died on the way; the last
# line names the tasks that failed and how.
report_parameter_server_job() {
    local status="$1" run_dir="$2"; shift 2
    local failures=""
    [ $# -eq 0 ] || failures="; $(IFS=';'; echo "$*" | sed 's/;/, /g') along the way"
    if [ "$status" -eq 0 ]; then
        say "parameter-server job finished: the chief completed the training${failures}; logs in $run_dir"
    else
        say "parameter-server job failed: chief 0 $(describe_exit "$status")${failures}; logs in $run_dir"
    fi
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
    # The examples package adds the library's own figures (Keras-style fit); the bench skips them without it.
    swift build -c release --package-path Examples >/dev/null || say "the examples package did not build: no library figures"
    local floor="${FLOOR_DIR:-../shared/floor}"
    [ -f "$floor/floor_mlp.c" ] || [ -x "$floor/bin/floor_mlp" ] || die "no floor at $floor (set FLOOR_DIR)"
    if [ ! -x "$floor/bin/floor_mlp" ]; then
        # shared/ may be read-only: build a private copy of the floor.
        mkdir -p .build/floor && cp "$floor"/*.c "$floor"/*.sh .build/floor/ && (cd .build/floor && bash build.sh >/dev/null) \
            || die "could not build the floor from $floor"
        floor=.build/floor
    fi
    python3 benchmarks/bench.py --tandem "$TANDEM" --floor "$floor"
}

case "${1:-}" in
    "")        install_system_packages; build; run_mirrored 2 configs/fashion-mnist-mlp-mirrored.json ;;
    -np)       [ $# -ge 3 ] || die "usage: ./launch.sh -np N CONFIG [tandem train flags]"
               ranks="$2"; shift 2; install_system_packages; build; run_mirrored "$ranks" "$@" ;;
    test)      SYSTEM_PACKAGES+=("${TEST_PACKAGES[@]}"); install_system_packages; run_tests ;;
    bench)     install_system_packages; run_bench ;;
    train)     shift; install_system_packages; build >/dev/null; "$TANDEM" train "$@" ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' ;;
    *.json)    [ -f "$1" ] || die "$1: no such config file"
               config="$1"; shift; install_system_packages; build >&2; run_cluster "$config" "$@" ;;
    *)         die "unknown command '$1' (try ./launch.sh --help)" ;;
esac
