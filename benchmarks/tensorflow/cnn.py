"""TensorFlow reference: keras.io's MNIST convnet on Fashion-MNIST, one process, the whole machine.

Keras Sequential: Input(28,28,1) -> Conv2D(32,3,relu) -> MaxPooling2D(2) -> Conv2D(64,3,relu) -> MaxPooling2D(2)
-> Flatten -> Dropout(0.5) -> Dense(10, softmax) (34,826 parameters); `--bn` puts a BatchNormalization after each
Conv2D (the -bn variant, configs/fashion-mnist-cnn-bn.json). Adam 1e-3, sparse categorical cross-entropy, batch 128
(468 steps per epoch, remainder dropped, as the floor and tandem), pixels/255, reshuffled every epoch, `model.fit`
with TensorFlow's default thread settings (all cores: this is "the whole machine", unlike the MLP scripts).
Each epoch's wall seconds come from a Keras callback; the last line is JSON (epoch_seconds_median: epochs 2..N).
Run: /opt/tf-venv/bin/python benchmarks/tensorflow/cnn.py [--seed 1] [--bn]
"""
import argparse, json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import EPOCHS, MAX_STEPS, N_TRAIN, T0, load_test, to_float, train_dataset, tf
import numpy as np

BATCH, LR = 128, 1e-3


def model(bn):
    layers = tf.keras.layers
    stack = [layers.Input((28, 28, 1))]
    for filters in (32, 64):
        stack.append(layers.Conv2D(filters, 3, activation="relu"))
        if bn:
            stack.append(layers.BatchNormalization())
        stack.append(layers.MaxPooling2D(2))
    stack += [layers.Flatten(), layers.Dropout(0.5), layers.Dense(10, activation="softmax")]
    return tf.keras.Sequential(stack)


class EpochTimer(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)
        print(f"epoch {epoch + 1}: {self.seconds[-1]:.2f} s, train loss {logs.get('loss', float('nan')):.4f}, "
              f"train accuracy {logs.get('accuracy', float('nan')):.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bn", action="store_true", help="BatchNormalization after each Conv2D")
    args = parser.parse_args()
    tf.keras.utils.set_random_seed(args.seed)   # Python, NumPy and TensorFlow seeds: weights, shuffle, dropout

    steps = MAX_STEPS or N_TRAIN // BATCH
    data = (train_dataset().shuffle(N_TRAIN, seed=args.seed, reshuffle_each_iteration=True)
            .batch(BATCH, drop_remainder=True).take(steps).map(to_float)
            .map(lambda x, y: (tf.reshape(x, [-1, 28, 28, 1]), y)).repeat().prefetch(tf.data.AUTOTUNE))
    net = model(args.bn)
    net.compile(optimizer=tf.keras.optimizers.Adam(LR), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    setup = time.time() - T0
    print(f"setup {setup:.2f} s; {net.count_params()} parameters; {steps} steps of {BATCH} per epoch; "
          f"tensorflow {tf.__version__}", flush=True)
    timer = EpochTimer()
    net.fit(data, epochs=EPOCHS, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[timer])   # shuffled above
    x, y = load_test()
    _, acc = net.evaluate(x.reshape(-1, 28, 28, 1), y, batch_size=1000, verbose=0)
    med = float(np.median(timer.seconds[1:] or timer.seconds))
    print(f"test accuracy {acc:.4f}; median epoch (2..{EPOCHS}) {med:.2f} s", flush=True)
    print(json.dumps({"model": "cnn-bn" if args.bn else "cnn", "epochs": EPOCHS, "batch": BATCH,
                      "epoch_seconds": [round(s, 3) for s in timer.seconds], "epoch_seconds_median": round(med, 3),
                      "samples_per_sec": round(steps * BATCH / med, 1), "test_accuracy": round(float(acc), 4),
                      "tensorflow": tf.__version__, "seed": args.seed, "steps_per_epoch": steps,
                      "setup_seconds": round(setup, 3)}), flush=True)


if __name__ == "__main__":
    main()
