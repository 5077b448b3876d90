#!/usr/bin/env python3
"""Tandem's benchmark: speed, accuracy, start-up and memory against the C floor (../shared/floor) and, where a
Python with TensorFlow is installed, against TensorFlow's own strategies on the same jobs — every ratio from
figures measured in the same run, medians over rounds (the machine is shared and noisy: absolute times drift,
ratios hold).

    python3 benchmarks/bench.py --tandem .build/release/tandem [--floor ../shared/floor] [--rounds 5] [--seeds 20]
                                [--no-cnn | --only-cnn [--no-tandem]] [--cnn-epochs 3]

The convnet section (keras.io's MNIST convnet, configs/fashion-mnist-cnn.json) opens every round, before the MLPs:
floor_cnn alone (its GEMM backward, the issue's yardstick, and --sparse, the scatter backward tandem's fused
convolution + pooling also uses), two floor_cnn at batch 64 at once plus the raw all-reduce of its 34,826 floats (the
floor's 2-process bound), tandem in one process, with --replicas 2 and under mpirun -np 2 (global batch 128 in all), and TensorFlow's
model.fit on the whole machine (benchmarks/tensorflow/cnn.py) where a Python with TensorFlow is at hand.

`./launch.sh bench` builds tandem (and the floor, when it has no binaries yet) and runs this. Raw records stay in
the folder it names (one JSON or JSON Lines file per run).
"""
import argparse, glob, json, os, re, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(command, output=None, env=None, quiet=False):
    """Runs a command from the repository root; `output`: a file for its last stdout line (the JSON record)."""
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL if quiet else None, text=True)
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(command[:4])} ... failed with exit status {result.returncode}")
    if output:
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        with open(output, "w") as file:
            file.write((lines[-1] if lines else "") + "\n")
    return result.stdout


def run_together(commands_and_outputs):
    """Runs commands at once (one per core, as mpirun places two ranks) and keeps each one's last line."""
    processes = [(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True), output)
                 for command, output in commands_and_outputs]
    for process, output in processes:
        stdout, _ = process.communicate()
        with open(output, "w") as file:
            file.write(stdout.strip().splitlines()[-1] + "\n")


def kernel_replacement(current):
    """Python twin of BLASKernelChoice.replacement: the kernels tandem would pick instead of OpenBLAS's fallback
    (for when tandem is not run: --no-tandem, or a tandem that does not say)."""
    if os.environ.get("OPENBLAS_CORETYPE") or current != "Prescott":
        return os.environ.get("OPENBLAS_CORETYPE", "")
    flags = next((set(line.split(":", 1)[1].split()) for line in open("/proc/cpuinfo") if line.startswith("flags")), set())
    if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return "Sandybridge" if "avx" in flags else ""


def measure(tandem, floor, out, rounds, seeds, tf_python, mlp=True, cnn_epochs=0, with_tandem=True):
    mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"]
    floor_mlp = os.path.join(floor, "bin", "floor_mlp")
    floor_cnn = os.path.join(floor, "bin", "floor_cnn")
    # The floor runs the OpenBLAS kernels Tandem runs (Tandem replaces OpenBLAS's fallback for a CPU it does not
    # know: Sources/TandemCore/BLASKernelChoice.swift), so the ratio compares loops, not kernels; one floor run per
    # round keeps OpenBLAS's own choice, to show what that choice costs. The variable set here covers every later
    # run (floor_cnn too: on OpenBLAS's fallback its sgemm is 5-7x slower).
    verbose = subprocess.run([tandem, "train", "configs/fashion-mnist-mlp.json", "--epochs", "1", "--progress", "silent", "-v"],
                             cwd=ROOT, capture_output=True, text=True).stderr if with_tandem else ""
    kernels = next((line.split("OpenBLAS kernels ", 1)[1].strip() for line in verbose.splitlines() if "OpenBLAS kernels " in line), "")
    default_env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    default_env["OPENBLAS_VERBOSE"] = "2"
    probe = subprocess.run([floor_mlp, "--model", "relu", "--epochs", "1"], cwd=ROOT, env=default_env, capture_output=True, text=True)
    default_kernels = next((line[len("Core: "):].strip() for line in (probe.stdout + probe.stderr).splitlines() if line.startswith("Core: ")), "")
    if not kernels:   # tandem not run, or silent about it: its rule, so that the floor still gets the kernels it would
        kernels = kernel_replacement(default_kernels) or default_kernels
    print(f"==> OpenBLAS kernels: {kernels or 'unknown'} for tandem and the floor (OpenBLAS alone would choose {default_kernels or 'unknown'})",
          file=sys.stderr)
    if kernels:
        os.environ["OPENBLAS_CORETYPE"] = kernels
    json.dump({"tandem": kernels, "openblas_default": default_kernels}, open(f"{out}/kernels.json", "w"))
    without_kernels = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    examples = os.path.join(ROOT, "Examples", ".build", "release")
    silent = ["--progress", "silent"]
    has_tf = bool(tf_python) and os.access(tf_python, os.X_OK)
    if cnn_epochs:
        json.dump({"epochs": cnn_epochs, "rounds": rounds, "tandem": with_tandem}, open(f"{out}/cnn.json", "w"))
    for r in range(1, rounds + 1):
        print(f"==> round {r} of {rounds}", file=sys.stderr)
        if cnn_epochs:
            measure_cnn(tandem if with_tandem else None, floor_cnn, os.path.join(floor, "bin", "floor_allreduce"), out, r,
                        cnn_epochs, tf_python if has_tf else None, mpirun)
        if not mlp:
            continue
        for model in ("relu", "tanh"):
            config = "configs/fashion-mnist-tanh.json" if model == "tanh" else "configs/fashion-mnist-mlp.json"
            run([floor_mlp, "--model", model], f"{out}/floor-{model}-{r}.json")
            # Two floors at once, one per core as mpirun places two ranks: what a step costs with both cores busy.
            run_together([(["taskset", "-c", str(core), floor_mlp, "--model", model], f"{out}/floor-{model}-busy{core}-{r}.json")
                          for core in (0, 1)])
            run([floor_mlp, "--model", model], f"{out}/floor-default-{model}-{r}.json", env=without_kernels)
            run([tandem, "train", config, "--seed", str(r), "--progress", "silent", "--metrics", f"{out}/tandem-{model}-{r}.jsonl"])
        run(mpirun + [tandem, "train", "configs/fashion-mnist-mlp-mirrored.json", "--seed", str(r), *silent,
                      "--metrics", f"{out}/mirrored-relu-{r}.jsonl"])
        run(mpirun + [tandem, "train", "configs/fashion-mnist-mlp-mirrored.json", "--reduction-groups", "4", "--seed", str(r), *silent,
                      "--metrics", f"{out}/grouped-relu-{r}.jsonl"])
        run(mpirun + [tandem, "train", "configs/fashion-mnist-tanh.json", "--batch-size", "128", "--seed", str(r), *silent,
                      "--metrics", f"{out}/mirrored-tanh-{r}.jsonl"])
        run([tandem, "train", "configs/fashion-mnist-tanh.json", "--replicas", "2", "--batch-size", "128", "--seed", str(r), *silent,
             "--metrics", f"{out}/threads-tanh-{r}.jsonl"])
        run([tandem, "train", "configs/fashion-mnist-mlp.json", "--replicas", "2", "--seed", str(r), *silent,
             "--metrics", f"{out}/threads-relu-{r}.jsonl"])
        # The parameter-server job (1 ps, 2 workers, chief) on its own ports; the chief writes the metrics.
        ps_env = dict(os.environ, TANDEM_PREBUILT=tandem, TANDEM_RUNS=f"{out}/runs-{r}",
                      TF_CONFIG='{"cluster":{"chief":["localhost:2530"],"worker":["localhost:2531","localhost:2532"],"ps":["localhost:2533"]}}')
        run(["./launch.sh", "configs/cluster-ps.json", "--seed", str(r), "--metrics", f"{out}/ps-{r}.jsonl"], env=ps_env, quiet=True)
        for floats in (15910, 42310):
            run(mpirun + [os.path.join(floor, "bin", "floor_allreduce"), "--floats", str(floats), "--iters", "2000"],
                f"{out}/allreduce-{floats}-{r}.json")
        # The library's Keras-style fit of the tanh model (the Examples package), where it was built: the CLI's path.
        if os.access(os.path.join(examples, "KerasStyle"), os.X_OK):
            run([os.path.join(examples, "KerasStyle"), "--seed", str(r), "--metrics", f"{out}/keras-tanh-{r}.jsonl"], quiet=True)
    if not mlp:
        return
    # Accuracy is a property of the recipe, not of one seed (seed-to-seed spread ~0.7 points at global batch 128):
    # the 2-rank job over more seeds than the timing rounds gave.
    if seeds > rounds:
        print(f"==> 2-rank accuracy over seeds {rounds + 1}..{seeds} as well", file=sys.stderr)
    for seed in range(rounds + 1, seeds + 1):
        run(mpirun + [tandem, "train", "configs/fashion-mnist-mlp-mirrored.json", "--seed", str(seed), "--progress", "silent",
                      "--metrics", f"{out}/mirrored-relu-{seed}.jsonl"])
    # TensorFlow's own strategies on the same job, once, where a Python with TensorFlow is at hand
    # (benchmarks/tensorflow/README.md); otherwise the figures the issues quote.
    if has_tf:
        print("==> TensorFlow reference runs (benchmarks/tensorflow, once each)", file=sys.stderr)
        for job, script in (("ps", "ps_strategy.py"), ("mwms", "mirrored_strategy.py")):
            result = subprocess.run([tf_python, f"benchmarks/tensorflow/{script}"], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            lines = result.stdout.strip().splitlines()
            if result.returncode == 0 and lines:
                open(f"{out}/tf-{job}.json", "w").write(lines[-1] + "\n")


CNN_CONFIG, CNN_PARAMETERS, CNN_STEPS = "configs/fashion-mnist-cnn.json", 34826, 60000 // 128


def measure_cnn(tandem, floor_cnn, floor_allreduce, out, r, epochs, tf_python, mpirun):
    """One round of the convnet section (seed r; tandem None: the floor and TensorFlow only)."""
    e = ["--epochs", str(epochs)]
    run([floor_cnn, *e, "--seed", "1"], f"{out}/floor-cnn-{r}.json")
    run([floor_cnn, *e, "--seed", "1", "--sparse"], f"{out}/floor-cnn-sparse-{r}.json")
    # The floor's 2-process bound: two floors at batch 64 at once, one per core as mpirun places two ranks (a step
    # with both cores busy), plus the raw all-reduce of the convnet's gradient.
    run_together([(["taskset", "-c", str(core), floor_cnn, *e, "--batch", "64", "--seed", str(core + 1)],
                   f"{out}/floor-cnn-busy{core}-{r}.json") for core in (0, 1)])
    run(mpirun + [floor_allreduce, "--floats", str(CNN_PARAMETERS), "--iters", "2000"], f"{out}/allreduce-{CNN_PARAMETERS}-{r}.json")
    if tandem:
        silent = ["--seed", str(r), *e, "--progress", "silent"]
        run([tandem, "train", CNN_CONFIG, *silent, "--metrics", f"{out}/tandem-cnn-{r}.jsonl"])
        run([tandem, "train", CNN_CONFIG, "--replicas", "2", *silent, "--metrics", f"{out}/threads-cnn-{r}.jsonl"])
        run(mpirun + [tandem, "train", CNN_CONFIG, *silent, "--metrics", f"{out}/mirrored-cnn-{r}.jsonl"])
    if tf_python:   # TensorFlow's Keras fit, default threads: the whole machine
        result = subprocess.run([tf_python, "benchmarks/tensorflow/cnn.py", "--seed", str(r)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, BENCH_EPOCHS=str(epochs)))
        lines = result.stdout.strip().splitlines()
        if result.returncode == 0 and lines:
            open(f"{out}/tf-cnn-{r}.json", "w").write(lines[-1] + "\n")
        else:
            print(f"==> benchmarks/tensorflow/cnn.py failed with exit status {result.returncode}", file=sys.stderr)


def report_cnn(out, rounds):
    median = statistics.median
    settings = json.load(open(f"{out}/cnn.json"))
    def load(name):  # a round's record: the floor's and TensorFlow's JSON, tandem's metrics summary; None when absent
        path = f"{out}/{name}"
        if not os.path.exists(path) or not os.path.getsize(path):
            return None
        return [json.loads(line) for line in open(path) if line.strip()][-1]
    def seconds(record):  # median of epochs 2..N
        if record is None:
            return None
        if "epoch_seconds_median" in record:
            return record["epoch_seconds_median"]
        return median(record["epoch_seconds"][1:] or record["epoch_seconds"])
    def bound(r):
        # The floor's own loop at 2 ranks, global batch 128: each rank's 468 steps of 64 at the cost of a step with both
        # cores busy (the slower of the two floors; floor_cnn --batch 64 makes 937 such steps an epoch), plus one raw
        # all-reduce of the gradient per step (on one host it is CPU work on the same cores: no free overlap).
        busy = max(seconds(load(f"floor-cnn-busy{core}-{r}.json")) for core in (0, 1))
        return CNN_STEPS * (busy / (60000 // 64) + load(f"allreduce-{CNN_PARAMETERS}-{r}.json")["median_us"] * 1e-6)
    jobs = {"floor": lambda r: load(f"floor-cnn-{r}.json"), "sparse": lambda r: load(f"floor-cnn-sparse-{r}.json"), "tandem": lambda r: load(f"tandem-cnn-{r}.jsonl"),
            "threads": lambda r: load(f"threads-cnn-{r}.jsonl"), "mirrored": lambda r: load(f"mirrored-cnn-{r}.jsonl"),
            "tf": lambda r: load(f"tf-cnn-{r}.json")}
    times = {job: [seconds(get(r)) for r in range(1, rounds + 1)] for job, get in jobs.items()}
    times["bound"] = [bound(r) for r in range(1, rounds + 1)]
    def figure(job):
        values = [v for v in times[job] if v is not None]
        return f"{median(values):8.3f}" if values else f"{'-':>8}"
    def ratio(a, b, bar=None):  # median over rounds of the same round's ratio, against its bar
        values = [x / y for x, y in zip(times[a], times[b]) if x is not None and y is not None]
        if not values:
            return "-"
        return f"{median(values):.2f}x" + (f" (bar <= {bar}: {'met' if median(values) <= bar else 'MISSED'})" if bar else "")
    def accuracy(job):
        values = [record["test_accuracy"] for record in map(jobs[job], range(1, rounds + 1)) if record and "test_accuracy" in record]
        return f"{median(values):.4f} [{min(values):.4f}-{max(values):.4f}]" if values else "-"
    allreduce = median(load(f"allreduce-{CNN_PARAMETERS}-{r}.json")["median_us"] for r in range(1, rounds + 1))
    tf_version = next((record["tensorflow"] for record in map(jobs["tf"], range(1, rounds + 1)) if record), None)

    print()
    print(f"Convnet (keras.io's MNIST convnet, {CNN_CONFIG}), global batch 128, {settings['epochs']} epochs; s/epoch: medians of "
          f"epochs 2..{settings['epochs']}, then over {rounds} rounds; ratios: median of each round's ratio")
    rows = [("floor_cnn, one process, one BLAS thread", "floor", ""),
            ("floor_cnn --sparse, one process", "sparse", "conv2's backward as a scatter of the nonzero pooled gradients"),
            ("tandem, one process", "tandem", f"tandem / floor {ratio('tandem', 'floor', 1.1)}; / floor --sparse {ratio('tandem', 'sparse')}"),
            ("floor 2-process bound", "bound", f"{CNN_STEPS} x (a batch-64 step with both cores busy + all-reduce of {CNN_PARAMETERS} floats, {allreduce:.1f} us)"),
            ("tandem --replicas 2", "threads", f"/ floor 2-process bound {ratio('threads', 'bound', 1.1)}; / TensorFlow {ratio('threads', 'tf', 0.75)}"),
            ("tandem mpirun -np 2", "mirrored", f"/ floor 2-process bound {ratio('mirrored', 'bound', 1.1)}; / TensorFlow {ratio('mirrored', 'tf', 0.75)}"),
            (f"TensorFlow {tf_version or ''} model.fit, all cores", "tf", "")]
    print(f"{'job':40} {'s/epoch':>8} {'test accuracy':>24}  ratios")
    for label, job, note in rows:
        print(f"{label:40} {figure(job)} {accuracy(job) if job != 'bound' else '':>24}  {note}")
    if not settings.get("tandem", True):
        print("(tandem was not run: --no-tandem)")


def report(out, rounds, seeds, mlp=True, cnn=True):
    if not mlp:
        if cnn:
            report_cnn(out, rounds)
        return
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

    keras = [f"{out}/keras-tanh-{r}.jsonl" for r in range(1, rounds + 1)]
    if all(os.path.exists(path) for path in keras):
        print()
        print("The library (Examples/KerasStyle: Sequential + compile + fit, one process)")
        rows = [(summary(k)["samples_per_sec"], summary(f"{out}/tandem-tanh-{r}.jsonl")["samples_per_sec"], summary(k)["test_accuracy"])
                for r, k in enumerate(keras, start=1)]
        print(f"tanh   {median(row[0] for row in rows):.0f} samples/s = {median(row[0] / row[1] for row in rows):.2f}x tandem train's "
              f"samples/s on the same model; test accuracy {spread([row[2] for row in rows])} (54,000 training rows after the validation split)")
    if cnn:
        report_cnn(out, rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tandem", default=os.path.join(ROOT, ".build", "release", "tandem"), help="the tandem binary")
    parser.add_argument("--floor", default=os.environ.get("FLOOR_DIR", os.path.join(ROOT, "..", "shared", "floor")),
                        help="the floor folder (its bin/ holds floor_mlp, floor_cnn, floor_allreduce)")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)), help="timing rounds")
    parser.add_argument("--seeds", type=int, default=int(os.environ.get("BENCH_ACCURACY_SEEDS", 20)),
                        help="seeds of the 2-rank accuracy figure")
    parser.add_argument("--tf-python", default=os.environ.get("TANDEM_TF_PYTHON", "/opt/tf-venv/bin/python"),
                        help="a Python with TensorFlow (skipped when absent)")
    parser.add_argument("--out", help="folder for the raw records (default: a new temporary folder)")
    parser.add_argument("--report-only", action="store_true", help="only print the report of an earlier run's --out")
    parser.add_argument("--no-cnn", action="store_true", help="leave out the convnet section")
    parser.add_argument("--only-cnn", action="store_true", help="run (or report) the convnet section alone")
    parser.add_argument("--cnn-epochs", type=int, default=int(os.environ.get("BENCH_CNN_EPOCHS", 3)),
                        help="epochs of each convnet run (figures: medians of epochs 2..N)")
    parser.add_argument("--no-tandem", action="store_true",
                        help="with --only-cnn: the floor and TensorFlow alone (for a tandem that cannot run the convnet yet)")
    arguments = parser.parse_args()
    if not 1 <= arguments.rounds <= 100 or not 0 <= arguments.seeds <= 1000:
        sys.exit("bench: --rounds must be 1..100 and --seeds 0..1000")
    if arguments.no_cnn and arguments.only_cnn:
        sys.exit("bench: --no-cnn and --only-cnn exclude each other")
    if arguments.no_tandem and not arguments.only_cnn:
        sys.exit("bench: --no-tandem needs --only-cnn (the MLP figures are all tandem's)")
    if not 2 <= arguments.cnn_epochs <= 256:
        sys.exit("bench: --cnn-epochs must be 2..256 (epoch 1 is left out of the medians)")
    mlp, cnn = not arguments.only_cnn, not arguments.no_cnn
    out = arguments.out or tempfile.mkdtemp(prefix="tandem-bench-")
    os.makedirs(out, exist_ok=True)
    seeds = max(arguments.seeds, arguments.rounds)
    if arguments.report_only:   # the sections an earlier run measured
        mlp = mlp and os.path.exists(f"{out}/floor-relu-1.json")
        cnn = cnn and os.path.exists(f"{out}/cnn.json")
    else:
        for binary in ("floor_mlp", "floor_allreduce") + (("floor_cnn",) if cnn else ()):
            if not os.access(os.path.join(arguments.floor, "bin", binary), os.X_OK):
                sys.exit(f"bench: no {binary} in {arguments.floor}/bin (build it: bash {arguments.floor}/build.sh)")
        print(f"==> benchmark: {arguments.rounds} rounds, floor and tandem alternating in each "
              f"(medians reported; raw files in {out})", file=sys.stderr)
        measure(os.path.abspath(arguments.tandem), os.path.abspath(arguments.floor), out, arguments.rounds, seeds, arguments.tf_python,
                mlp=mlp, cnn_epochs=arguments.cnn_epochs if cnn else 0, with_tandem=not arguments.no_tandem)
    report(out, arguments.rounds, seeds, mlp=mlp, cnn=cnn)


if __name__ == "__main__":
    main()
