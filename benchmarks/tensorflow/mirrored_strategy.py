"""TensorFlow reference: MultiWorkerMirroredStrategy, 2 workers on localhost.

This launcher starts two worker processes (this file with --worker, each with its own
TF_CONFIG) and relays worker 0's output. Each worker trains the 784-20-10 MLP on its half
of the data, 64 images per step (global batch 128), gradients all-reduced every step;
468 (= 60000 // 128) steps per epoch, custom training loop.
Run: /opt/tf-venv/bin/python benchmarks/tensorflow/mirrored_strategy.py
"""
import json, os, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (BATCH, EPOCHS, LR, MAX_STEPS, N_TRAIN, T0, TIMEOUT, loss_fn, make_params, report,
                    single_threaded, spawn, stop, free_ports, test_accuracy, to_float, train_dataset, tf)

N_WORKERS = 2


def worker():
    single_threaded()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    with strategy.scope():   # initial values are broadcast from worker 0
        params = make_params(aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def dataset_fn(ctx):   # this worker's shard, batch 64
        return (train_dataset().shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
                .shuffle(N_TRAIN // ctx.num_input_pipelines).repeat()
                .batch(ctx.get_per_replica_batch_size(BATCH * N_WORKERS), drop_remainder=True)
                .map(to_float).prefetch(2))
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

    @tf.function
    def step(it):
        def replica_fn(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(params, x, y)
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.MEAN, tape.gradient(loss, params))
            for v, g in zip(params, grads):
                v.assign_sub(LR * g)    # plain SGD on the global-batch mean gradient
            return loss
        return strategy.reduce(tf.distribute.ReduceOp.MEAN,
                               strategy.run(replica_fn, args=next(it)), axis=None)

    steps = MAX_STEPS or N_TRAIN // (BATCH * N_WORKERS)
    setup = time.time() - T0
    say = print if index == 0 else (lambda *a, **k: None)
    say(f"setup {setup:.2f} s", flush=True)
    epochs = []
    for e in range(EPOCHS):
        t, total = time.time(), 0.0
        for _ in range(steps):
            total += step(iterator)
        total = float(total)   # waits for the last step
        epochs.append(time.time() - t)
        say(f"epoch {e + 1}: {epochs[-1]:.2f} s ({steps} steps), mean train loss {total / steps:.4f}", flush=True)
    if index == 0:
        report("mwms", epochs, setup, test_accuracy(params), workers=N_WORKERS,
               global_batch=BATCH * N_WORKERS, steps_per_epoch=steps, tf_version=tf.__version__)


def main():
    ports = free_ports(N_WORKERS)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = [spawn([sys.executable, __file__, "--worker"],
                   env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
                   stdout=None if i == 0 else subprocess.DEVNULL)
             for i in range(N_WORKERS)]
    try:
        deadline = time.time() + TIMEOUT
        codes = [p.wait(timeout=max(1, deadline - time.time())) for p in procs]
    except subprocess.TimeoutExpired:
        print(f"timeout after {TIMEOUT} s", file=sys.stderr)
        codes = [1]
    finally:
        stop(procs)
    sys.exit(max(codes))


if __name__ == "__main__":
    worker() if sys.argv[1:2] == ["--worker"] else main()
