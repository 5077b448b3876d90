"""TensorFlow reference: ParameterServerStrategy, 1 ps + 2 workers + chief (coordinator).

The chief (this process) starts the ps and worker tf.distribute.Server's as separate
processes on free localhost ports, then trains the 784-20-10 MLP with a ClusterCoordinator
custom loop: 937 (= 60000 // 64) scheduled steps of batch 64 per epoch, join() at epoch end.
Run: /opt/tf-venv/bin/python benchmarks/tensorflow/ps_strategy.py
"""
import json, os, signal, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (BATCH, EPOCHS, LR, MAX_STEPS, N_TRAIN, T0, TIMEOUT, loss_fn, make_params, report,
                    single_threaded, spawn, stop, free_ports, test_accuracy, to_float, train_dataset, tf)


def serve(cluster, job, index):
    """Helper process: one ps or worker server; killed by SIGALRM or when the chief dies."""
    signal.alarm(TIMEOUT + 60)
    # 1 intra-op thread; inter-op must be >= 2: with 1, the first scheduled steps never finish
    # (observed: workers sat idle for 10 min; presumably a blocking op starves the one thread).
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=2)
    tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=job, task_index=index,
                         protocol="grpc", config=config, start=True).join()


def main():
    p = free_ports(4)
    cluster = {"chief": [f"localhost:{p[0]}"], "ps": [f"localhost:{p[1]}"],
               "worker": [f"localhost:{p[2]}", f"localhost:{p[3]}"]}
    helpers = [spawn([sys.executable, __file__, "--serve", json.dumps(cluster), job, str(i)])
               for job in ("ps", "worker") for i in range(len(cluster[job]))]

    def on_timeout(*_):
        print(f"timeout after {TIMEOUT} s", file=sys.stderr, flush=True)
        stop(helpers)
        os._exit(1)
    signal.signal(signal.SIGALRM, on_timeout)
    signal.alarm(TIMEOUT)
    try:
        single_threaded()
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type="chief", task_id=0, rpc_layer="grpc")
        strategy = tf.distribute.ParameterServerStrategy(resolver)
        coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
        with strategy.scope():
            params = make_params()

        def dataset_fn():   # runs on each worker: its own shuffled pass over all 60000 images
            return train_dataset().shuffle(N_TRAIN).repeat().batch(BATCH).map(to_float).prefetch(2)
        iterator = iter(coordinator.create_per_worker_dataset(dataset_fn))

        @tf.function
        def step(it):
            def replica_fn(x, y):
                with tf.GradientTape() as tape:
                    loss = loss_fn(params, x, y)
                for v, g in zip(params, tape.gradient(loss, params)):
                    v.assign_sub(LR * g)    # plain SGD, applied asynchronously on the ps
                return loss
            return strategy.run(replica_fn, args=next(it))

        steps = MAX_STEPS or N_TRAIN // BATCH
        setup = time.time() - T0
        print(f"setup {setup:.2f} s (helpers: separate processes)", flush=True)
        epochs = []
        for e in range(EPOCHS):
            t = time.time()
            for _ in range(steps):
                coordinator.schedule(step, args=(iterator,))
            coordinator.join()
            epochs.append(time.time() - t)
            print(f"epoch {e + 1}: {epochs[-1]:.2f} s ({steps} steps)", flush=True)
        report("ps", epochs, setup, test_accuracy(params), ps_processes="separate",
               steps_per_epoch=steps, tf_version=tf.__version__)
    finally:
        stop(helpers)
    sys.stdout.flush()
    os._exit(0)   # skip TF's at-exit RPCs to the servers just stopped (only noise)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        main()
