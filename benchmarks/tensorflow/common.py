"""Shared pieces of the TensorFlow reference benchmarks: data, model, timing, helper processes."""
import gzip, os, signal, socket, subprocess, time

T0 = float(os.environ.get("BENCH_T0", time.time()))   # "process start" (launcher's start if inherited)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf

DATA_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
LR, BATCH, N_TRAIN, HIDDEN = 0.1, 64, 60000, 20
EPOCHS = int(os.environ.get("BENCH_EPOCHS", "5"))
MAX_STEPS = int(os.environ.get("BENCH_MAX_STEPS", "0"))   # >0 only for smoke tests
TIMEOUT = int(os.environ.get("BENCH_TIMEOUT", "1800"))   # seconds before everything is killed


def single_threaded():
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _idx(name):
    for f in (name, name + ".gz"):
        path = os.path.join(DATA_DIR, f)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{name}[.gz] not in {DATA_DIR}")


@tf.autograph.experimental.do_not_convert   # plain Python file look-ups, also when traced
def train_dataset():
    """Unbatched (uint8[784], uint8) pairs read straight from the IDX files, cached in memory."""
    def records(name, size, header):
        path = _idx(name)
        return tf.data.FixedLengthRecordDataset(
            path, size, header_bytes=header, compression_type="GZIP" if path.endswith(".gz") else "")
    ds = tf.data.Dataset.zip((records("train-images-idx3-ubyte", 784, 16),
                              records("train-labels-idx1-ubyte", 1, 8)))
    return ds.map(lambda x, y: (tf.io.decode_raw(x, tf.uint8), tf.io.decode_raw(y, tf.uint8)[0])).cache()


def to_float(x, y):   # applied per batch: pixels to [0,1], labels to int32
    return tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.int32)


def load_test():
    def read(name, header):
        path = _idx(name)
        raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
        return np.frombuffer(raw, np.uint8, offset=header)
    return (read("t10k-images-idx3-ubyte", 16).reshape(-1, 784).astype(np.float32) / 255.0,
            read("t10k-labels-idx1-ubyte", 8).astype(np.int32))


def make_params(**var_kwargs):
    """784-20-10 MLP: Glorot-uniform weights, zero biases."""
    def glorot(n_in, n_out):
        lim = (6.0 / (n_in + n_out)) ** 0.5
        return tf.Variable(tf.random.uniform([n_in, n_out], -lim, lim), **var_kwargs)
    return [glorot(784, HIDDEN), tf.Variable(tf.zeros([HIDDEN]), **var_kwargs),
            glorot(HIDDEN, 10), tf.Variable(tf.zeros([10]), **var_kwargs)]


def logits(params, x):   # softmax is folded into the loss (same maths as Dense(10, softmax) + CE)
    w1, b1, w2, b2 = params
    return tf.matmul(tf.nn.relu(tf.matmul(x, w1) + b1), w2) + b2


def loss_fn(params, x, y):   # mean sparse categorical cross-entropy over the batch
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits(params, x)))


def test_accuracy(params):
    x, y = load_test()
    pred = tf.argmax(logits([tf.convert_to_tensor(p) for p in params], x), axis=1, output_type=tf.int32)
    return float(tf.reduce_mean(tf.cast(pred == y, tf.float32)))


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _die_with_parent():   # Linux prctl(PR_SET_PDEATHSIG, SIGKILL)
    import ctypes
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)


def spawn(cmd, env=None, **kw):
    env = dict(os.environ, BENCH_T0=repr(T0), **(env or {}))
    return subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent, **kw)


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def report(job, epoch_seconds, setup_seconds, acc, **extra):
    import json
    med = float(np.median(epoch_seconds))
    print(f"test accuracy {acc:.4f}; median epoch {med:.2f} s", flush=True)
    print(json.dumps({"job": job, "epoch_seconds": [round(s, 3) for s in epoch_seconds],
                      "median_epoch_seconds": round(med, 3), "setup_seconds": round(setup_seconds, 3),
                      "test_accuracy": round(acc, 4), **extra}), flush=True)
