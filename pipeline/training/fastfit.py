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
from typing import Optional

import numpy as np

from features.tfimport import import_tensorflow

EPSILON = 1e-7


class _FusedOptimizer:
    """Slots and one fused update per variable, for rmsprop, adam or sgd (+momentum)."""

    def __init__(self, tf, name: str, lr: float, variables, momentum: float = 0.0):
        self.tf, self.name, self.lr, self.momentum = tf, name, float(lr), float(momentum)
        self.vars = variables
        self.slots = [[tf.Variable(tf.zeros_like(v), trainable=False) for _ in range(2)]
                      for v in variables]
        self.step = tf.Variable(0.0, trainable=False, dtype=tf.float32)

    def apply(self, grads) -> None:
        tf, raw = self.tf, self.tf.raw_ops
        self.step.assign_add(1.0)
        for var, grad, (a, b) in zip(self.vars, grads, self.slots):
            if self.name == "rmsprop":
                raw.ResourceApplyRMSProp(var=var.handle, ms=a.handle, mom=b.handle, lr=self.lr, rho=0.9,
                                         momentum=0.0, epsilon=EPSILON, grad=grad)
            elif self.name == "adam":
                raw.ResourceApplyAdam(var=var.handle, m=a.handle, v=b.handle,
                                      beta1_power=tf.pow(0.9, self.step),
                                      beta2_power=tf.pow(0.999, self.step), lr=self.lr, beta1=0.9,
                                      beta2=0.999, epsilon=EPSILON, grad=grad)
            elif self.momentum:
                raw.ResourceApplyKerasMomentum(var=var.handle, accum=a.handle, lr=self.lr, grad=grad,
                                               momentum=self.momentum)
            else:
                raw.ResourceApplyGradientDescent(var=var.handle, alpha=self.lr, delta=grad)


def fast_fit(model, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, *,
             epochs: int, batch_size: int, optimizer: str, lr: float, seed: int,
             class_weight: Optional[dict] = None, patience: int = 0, momentum: float = 0.0,
             on_epoch=None, prepare=None, views: int = 1, monitor: str = "val_loss",
             keep_best: bool = False, baseline: Optional[float] = None,
             eval_batch: int = 1024, jit: bool = False, augment=None) -> dict:
    """Train ``model`` (sigmoid or softmax output); returns a Keras-style history dict.

    History keys: loss, accuracy (training mode, averaged over the epoch's batches),
    val_loss, val_accuracy. ``prepare(batch)`` runs in the graph on every batch before
    the model (e.g. uint8 -> preprocessed float; default: cast to float32), and
    ``augment(batch)`` after it on training batches only (never in evaluation). With
    ``views`` > 1, ``x`` holds that many versions of each of the ``len(y)`` examples,
    view-major (version v of example i is row v * len(y) + i), and every epoch picks
    one version per example at random (seeded). ``monitor`` (val_loss, lower is
    better, or val_accuracy, higher) drives ``patience`` (stop after that many epochs
    without improvement) and ``keep_best`` (restore the best epoch's weights; with
    ``baseline``, the monitor's value before training, the starting weights are kept
    when no epoch beats it). ``on_epoch(logs)`` is called after every epoch. ``jit``
    compiles the training step and evaluation with XLA (faster for plain convolutions,
    slower for depthwise ones: measure).
    """
    tf = import_tensorflow()
    import keras

    if monitor not in ("val_loss", "val_accuracy"):
        raise ValueError(f"monitor must be val_loss or val_accuracy, not {monitor!r}")
    binary = model.output_shape[-1] == 1
    prepare = prepare or (lambda batch: tf.cast(batch, tf.float32))
    X, Xv = tf.constant(x), tf.constant(xv)
    Y, Yv = tf.constant(y, tf.int32), tf.constant(yv, tf.int32)
    n_classes = 2 if binary else model.output_shape[-1]
    weights = np.ones(n_classes, np.float32)
    for k, w in (class_weight or {}).items():
        weights[int(k)] = w
    W = tf.constant(weights)
    variables = [v.value for v in model.trainable_variables]
    opt = _FusedOptimizer(tf, optimizer, lr, variables, momentum)
    n, n_val = len(y), len(yv)
    steps = math.ceil(n / batch_size)
    if len(x) != n * views:
        raise ValueError(f"x has {len(x)} rows; {views} view(s) of {n} examples need {n * views}")

    def losses(labels, probs):
        if binary:
            return keras.losses.binary_crossentropy(tf.cast(labels[:, None], tf.float32), probs)
        return keras.losses.sparse_categorical_crossentropy(labels, probs)

    def correct(labels, probs):
        pred = tf.cast(probs[:, 0] > 0.5, tf.int32) if binary else tf.argmax(probs, -1, tf.int32)
        return tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.float32))

    @tf.function(jit_compile=jit)
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            probs = model(xb, training=True)
            loss = tf.reduce_mean(losses(yb, probs) * tf.gather(W, yb))
        opt.apply(tape.gradient(loss, variables))
        return loss, correct(yb, probs)

    @tf.function(jit_compile=jit)
    def eval_step(xb, yb):
        probs = model(xb, training=False)
        return tf.reduce_sum(losses(yb, probs)), correct(yb, probs)

    @tf.function
    def run_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))
        if views > 1:
            view = tf.random.stateless_uniform([n], tf.stack([seed + 1, epoch]), 0, views, tf.int32)
        total_loss, total_right = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            rows = idx + tf.gather(view, idx) * n if views > 1 else idx
            xb = prepare(tf.gather(X, rows))
            if augment is not None:  # outside the compiled step: XLA has no image warp kernel
                xb = augment(xb)
            loss, right = train_step(xb, tf.gather(Y, idx))
            total_loss += loss * tf.cast(tf.shape(idx)[0], tf.float32)
            total_right += right
        return total_loss / n, total_right / n

    @tf.function
    def evaluate():
        total_loss, total_right = tf.constant(0.0), tf.constant(0.0)
        for start in tf.range(0, n_val, eval_batch):  # bounded activations
            loss, right = eval_step(prepare(Xv[start:start + eval_batch]), Yv[start:start + eval_batch])
            total_loss += loss
            total_right += right
        return total_loss / n_val, total_right / n_val

    sign = 1.0 if monitor == "val_loss" else -1.0  # compare as "lower is better"
    restore = keep_best or patience > 0
    best = math.inf if baseline is None else sign * baseline
    best_weights = model.get_weights() if restore and baseline is not None else None
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    waited = 0
    for epoch in range(epochs):
        loss, acc = run_epoch(tf.constant(epoch))
        val_loss, val_acc = evaluate()
        for key, value in zip(history, (loss, acc, val_loss, val_acc)):
            history[key].append(float(value))
        if on_epoch:
            on_epoch({k: v[-1] for k, v in history.items()})
        if sign * history[monitor][-1] < best:
            best, waited = sign * history[monitor][-1], 0
            if restore:
                best_weights = model.get_weights()
        else:
            waited += 1
            if patience and waited >= patience:
                break
    if restore and best_weights is not None:
        model.set_weights(best_weights)
    return history
