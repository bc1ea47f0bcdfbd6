"""Train a Keras model on in-memory tensors with one compiled call per epoch.

Why not ``model.fit``: on a CPU, a head such as Flatten(7x7x256) -> Dense(256) has
3.2 M weights, and Keras' optimizers update them with several separate
element-wise kernels per step, each a full pass over memory. Here the whole epoch
(shuffle, batches, forward, backward, update) is one ``tf.function``, and the
update is TensorFlow's fused kernel for the same formula (``ResourceApplyRMSProp``,
``ResourceApplyAdam``, ``ResourceApplyKerasMomentum``): one pass per step. The
arithmetic is Keras' own (same defaults: RMSprop rho 0.9, Adam betas 0.9/0.999,
epsilon 1e-7), so results match ``model.fit`` up to float rounding and shuffling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bneck.core.tfimport import import_tensorflow

EPSILON = 1e-7


class _FusedOptimizer:
    """Slots and one fused update per variable, for rmsprop, adam or sgd (+momentum)."""

    def __init__(self, tf, name: str, lr: float, variables, momentum: float = 0.0, schedule=None):
        self.tf, self.name, self.momentum = tf, name, float(momentum)
        self.base_lr, self.schedule = float(lr), schedule
        self.vars = variables
        self.slots = [[tf.Variable(tf.zeros_like(v), trainable=False) for _ in range(2)] for v in variables]
        self.step = tf.Variable(0.0, trainable=False, dtype=tf.float32)

    def apply(self, grads) -> None:
        tf, raw = self.tf, self.tf.raw_ops
        self.step.assign_add(1.0)
        lr = self.base_lr if self.schedule is None else self.base_lr * self.schedule(self.step)
        for var, grad, (a, b) in zip(self.vars, grads, self.slots):
            if self.name == "rmsprop":
                raw.ResourceApplyRMSProp(
                    var=var.handle, ms=a.handle, mom=b.handle, lr=lr, rho=0.9, momentum=0.0, epsilon=EPSILON, grad=grad
                )
            elif self.name == "adam":
                raw.ResourceApplyAdam(
                    var=var.handle,
                    m=a.handle,
                    v=b.handle,
                    beta1_power=tf.pow(0.9, self.step),
                    beta2_power=tf.pow(0.999, self.step),
                    lr=lr,
                    beta1=0.9,
                    beta2=0.999,
                    epsilon=EPSILON,
                    grad=grad,
                )
            elif self.momentum:
                raw.ResourceApplyKerasMomentum(var=var.handle, accum=a.handle, lr=lr, grad=grad, momentum=self.momentum)
            else:
                raw.ResourceApplyGradientDescent(var=var.handle, alpha=lr, delta=grad)


@dataclass(frozen=True)
class FitOptions:
    """How ``fast_fit`` trains (see its docstring for each)."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    seed: int
    momentum: float = 0.0
    class_weight: dict | None = None
    patience: int = 0
    monitor: str = "val_loss"
    keep_best: bool = False
    baseline: float | None = None
    views: int = 1
    prepare: Callable | None = None
    augment: Callable | None = None
    eval_batch: int = 1024
    jit: bool = False
    schedule: str = "constant"
    warmup: float = 0.0
    label_smoothing: float = 0.0


SCHEDULES = ("constant", "cosine")


def lr_factor(tf, step, total_steps: int, schedule: str, warmup_steps: int):
    """Return the learning-rate factor at (1-based) ``step`` of ``total_steps``.

    ``constant``: 1 after a linear warm-up of ``warmup_steps``. ``cosine``: the same
    warm-up, then half a cosine from 1 down to 0 at the last step (Loshchilov & Hutter).
    """
    warm = tf.minimum(1.0, step / float(max(warmup_steps, 1))) if warmup_steps else tf.constant(1.0)
    if schedule == "constant":
        return warm
    progress = (step - warmup_steps) / float(max(total_steps - warmup_steps, 1))
    progress = tf.clip_by_value(progress, 0.0, 1.0)
    return warm * 0.5 * (1.0 + tf.cos(math.pi * progress))


def fast_fit(model, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, *, on_epoch=None, **options) -> dict:
    """Train ``model`` (sigmoid or softmax output); returns a Keras-style history dict.

    ``options`` are ``FitOptions``' fields. History keys: loss, accuracy (training mode,
    averaged over the epoch's batches), val_loss, val_accuracy. ``prepare(batch)`` runs
    in the graph on every batch before the model (e.g. uint8 -> preprocessed float;
    default: cast to float32), and ``augment(batch)`` after it on training batches only
    (never in evaluation). ``schedule`` (constant or cosine) with ``warmup`` (a fraction
    of all steps, linear from 0) shapes the learning rate per step; ``label_smoothing``
    smooths the training targets only (validation loss is the plain cross-entropy).
    With ``views`` > 1, ``x`` holds that many versions of each of
    the ``len(y)`` examples, view-major (version v of example i is row v * len(y) + i),
    and every epoch picks one version per example at random (seeded). ``monitor``
    (val_loss, lower is better, or val_accuracy, higher) drives ``patience`` (stop after
    that many epochs without improvement) and ``keep_best`` (restore the best epoch's
    weights; with ``baseline``, the monitor's value before training, the starting weights
    are kept when no epoch beats it). ``on_epoch(logs)`` is called after every epoch.
    ``jit`` compiles the training step and evaluation with XLA (faster for plain
    convolutions, slower for depthwise ones: measure). ``x`` and ``xv`` may also be row
    sources on disk (``take(indices)``, ``[a:b]``, ``len``; e.g. stage 3's ``RowFile``):
    they are read a block of batches at a time, in exactly the order the in-memory path
    uses, so both give the same history while memory stays one block.
    """
    opts = FitOptions(**options)
    if opts.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {opts.schedule!r}")
    if opts.monitor not in ("val_loss", "val_accuracy"):
        raise ValueError(f"monitor must be val_loss or val_accuracy, not {opts.monitor!r}")
    if len(x) != len(y) * opts.views:
        raise ValueError(f"x has {len(x)} rows; {opts.views} view(s) of {len(y)} examples need {len(y) * opts.views}")
    compiled = _compiled_epoch if isinstance(x, np.ndarray) and isinstance(xv, np.ndarray) else _streamed_epoch
    run_epoch, evaluate = compiled(model, x, y, xv, yv, opts)
    return _train_epochs(model, run_epoch, evaluate, opts, on_epoch)


@dataclass
class _Steps:
    """The compiled pieces both feeding paths share."""

    train_step: Callable  # (x batch, y batch) -> (mean loss, right)
    eval_step: Callable  # (x batch, y batch) -> (summed loss, right)
    prepare: Callable
    epoch_order: Callable  # epoch -> (shuffled example order, the view picked per example or None)
    steps: int


def _steps(model, n: int, opts: FitOptions) -> _Steps:
    """Build the optimizer, the losses and the compiled train and eval steps for ``n`` examples."""
    tf = import_tensorflow()
    import keras

    binary = model.output_shape[-1] == 1
    prepare = opts.prepare or (lambda batch: tf.cast(batch, tf.float32))
    weights = np.ones(2 if binary else model.output_shape[-1], np.float32)
    for k, w in (opts.class_weight or {}).items():
        weights[int(k)] = w
    W = tf.constant(weights)
    variables = [v.value for v in model.trainable_variables]
    views, batch_size, seed = opts.views, opts.batch_size, opts.seed
    steps = math.ceil(n / batch_size)
    total = steps * opts.epochs
    warmup = int(round(opts.warmup * total))
    schedule = (
        None
        if opts.schedule == "constant" and not warmup
        else (lambda step: lr_factor(tf, step, total, opts.schedule, warmup))
    )
    opt = _FusedOptimizer(tf, opts.optimizer, opts.lr, variables, opts.momentum, schedule)
    n_out = model.output_shape[-1]

    def losses(labels, probs, smoothing=0.0):
        if binary:
            return keras.losses.binary_crossentropy(
                tf.cast(labels[:, None], tf.float32), probs, label_smoothing=smoothing
            )
        if smoothing:
            return keras.losses.categorical_crossentropy(tf.one_hot(labels, n_out), probs, label_smoothing=smoothing)
        return keras.losses.sparse_categorical_crossentropy(labels, probs)

    def correct(labels, probs):
        pred = tf.cast(probs[:, 0] > 0.5, tf.int32) if binary else tf.argmax(probs, -1, tf.int32)
        return tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.float32))

    @tf.function(jit_compile=opts.jit)
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            probs = model(xb, training=True)
            loss = tf.reduce_mean(losses(yb, probs, opts.label_smoothing) * tf.gather(W, yb))
        opt.apply(tape.gradient(loss, variables))
        return loss, correct(yb, probs)

    @tf.function(jit_compile=opts.jit)
    def eval_step(xb, yb):
        probs = model(xb, training=False)
        return tf.reduce_sum(losses(yb, probs)), correct(yb, probs)

    def epoch_order(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))
        view = tf.random.stateless_uniform([n], tf.stack([seed + 1, epoch]), 0, views, tf.int32) if views > 1 else None
        return order, view

    return _Steps(train_step, eval_step, prepare, epoch_order, steps)


def _compiled_epoch(model, x, y, xv, yv, opts: FitOptions):
    """Return (run_epoch(epoch) -> (loss, accuracy), evaluate() -> (val_loss, val_accuracy)), compiled,
    for in-memory arrays: the whole epoch is one call."""
    tf = import_tensorflow()
    n, n_val, views, batch_size, augment = len(y), len(yv), opts.views, opts.batch_size, opts.augment
    s = _steps(model, n, opts)
    X, Xv = tf.constant(x), tf.constant(xv)
    Y, Yv = tf.constant(y, tf.int32), tf.constant(yv, tf.int32)

    @tf.function
    def run_epoch(epoch):
        order, view = s.epoch_order(epoch)
        total_loss, total_right = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(s.steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            rows = idx + tf.gather(view, idx) * n if views > 1 else idx
            xb = s.prepare(tf.gather(X, rows))
            if augment is not None:  # outside the compiled step: XLA has no image warp kernel
                xb = augment(xb)
            loss, right = s.train_step(xb, tf.gather(Y, idx))
            total_loss += loss * tf.cast(tf.shape(idx)[0], tf.float32)
            total_right += right
        return total_loss / n, total_right / n

    @tf.function
    def evaluate():
        total_loss, total_right = tf.constant(0.0), tf.constant(0.0)
        for start in tf.range(0, n_val, opts.eval_batch):  # bounded activations
            loss, right = s.eval_step(
                s.prepare(Xv[start : start + opts.eval_batch]), Yv[start : start + opts.eval_batch]
            )
            total_loss += loss
            total_right += right
        return total_loss / n_val, total_right / n_val

    return (lambda epoch: run_epoch(tf.constant(epoch))), evaluate


class ArrayRows:
    """An array in memory as a row source (``take``, ``[a:b]``, ``len``): ``fast_fit`` then reads it a block
    at a time, in the same order, instead of copying it whole into TensorFlow (1.75 times its size: at
    100,000 images, 140 MB more for the pooled rows of a small head, every byte of it growing with the data)."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def take(self, indices) -> np.ndarray:
        return self.x[np.asarray(indices)]

    def __getitem__(self, item: slice) -> np.ndarray:
        return self.x[item]


# Batches read from a row source per call of the compiled block loop.
BLOCK_BATCHES = 32


def _streamed_epoch(model, x, y, xv, yv, opts: FitOptions):
    """As ``_compiled_epoch``, for row sources on disk: each epoch reads blocks of ``BLOCK_BATCHES``
    batches, in the in-memory path's order, and runs each block as one compiled call."""
    tf = import_tensorflow()
    n, n_val, views, batch_size, augment = len(y), len(yv), opts.views, opts.batch_size, opts.augment
    s = _steps(model, n, opts)
    y = np.asarray(y, np.int32)

    @tf.function(reduce_retracing=True)
    def run_block(xs, ys):
        total_loss, total_right = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range((tf.shape(ys)[0] + batch_size - 1) // batch_size):
            xb = s.prepare(xs[i * batch_size : (i + 1) * batch_size])
            if augment is not None:
                xb = augment(xb)
            yb = ys[i * batch_size : (i + 1) * batch_size]
            loss, right = s.train_step(xb, yb)
            total_loss += loss * tf.cast(tf.shape(yb)[0], tf.float32)
            total_right += right
        return total_loss, total_right

    @tf.function(reduce_retracing=True)
    def eval_block(xs, ys):
        return s.eval_step(s.prepare(xs), ys)

    def run_epoch(epoch):
        order, view = s.epoch_order(tf.constant(epoch))
        order = order.numpy()
        rows = order + view.numpy()[order] * n if views > 1 else order
        total_loss = total_right = 0.0
        for lo, xs in _read_ahead(x, rows, BLOCK_BATCHES * batch_size):
            loss, right = run_block(tf.constant(xs), tf.constant(y[order[lo : lo + len(xs)]]))
            total_loss, total_right = total_loss + float(loss), total_right + float(right)
        return _means(total_loss, total_right, n)

    def evaluate():
        total_loss = total_right = 0.0
        for lo in range(0, n_val, opts.eval_batch):
            loss, right = eval_block(
                tf.constant(np.ascontiguousarray(xv[lo : lo + opts.eval_batch])),
                tf.constant(np.asarray(yv[lo : lo + opts.eval_batch], np.int32)),
            )
            total_loss, total_right = total_loss + float(loss), total_right + float(right)
        return _means(total_loss, total_right, n_val)

    return run_epoch, evaluate


def _means(total_loss: float, total_right: float, n: int) -> tuple[float, float]:
    """Mean loss and accuracy over ``n`` examples; NaN for none, as the in-memory path gives."""
    return (total_loss / n, total_right / n) if n else (math.nan, math.nan)


def _read_ahead(x, rows: np.ndarray, block: int):
    """Yield (start, ``x.take(rows[start : start + block])``) block by block, the next block read by a
    thread while the caller trains on this one: the disk's time hides behind the model's (one block more
    in memory)."""
    from concurrent.futures import ThreadPoolExecutor

    starts = range(0, len(rows), block)
    with ThreadPoolExecutor(1, thread_name_prefix="bneck-read-ahead") as reader:
        pending = reader.submit(x.take, rows[:block]) if len(starts) else None
        for lo in starts:
            xs = pending.result()
            if lo + block < len(rows):
                pending = reader.submit(x.take, rows[lo + block : lo + 2 * block])
            yield lo, xs


def _train_epochs(model, run_epoch, evaluate, opts: FitOptions, on_epoch) -> dict:
    """Run the epochs, stopping early and keeping the best weights as ``opts`` says; returns the history."""
    sign = 1.0 if opts.monitor == "val_loss" else -1.0  # compare as "lower is better"
    restore = opts.keep_best or opts.patience > 0
    best = math.inf if opts.baseline is None else sign * opts.baseline
    best_weights = model.get_weights() if restore and opts.baseline is not None else None
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    waited = 0
    for epoch in range(opts.epochs):
        loss, acc = run_epoch(epoch)
        val_loss, val_acc = evaluate()
        for key, value in zip(history, (loss, acc, val_loss, val_acc)):
            history[key].append(float(value))
        if on_epoch:
            on_epoch({k: v[-1] for k, v in history.items()})
        if sign * history[opts.monitor][-1] < best:
            best, waited = sign * history[opts.monitor][-1], 0
            if restore:
                best_weights = model.get_weights()
        else:
            waited += 1
            if opts.patience and waited >= opts.patience:
                break
    if restore and best_weights is not None:
        model.set_weights(best_weights)
    return history
