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
             on_epoch=None) -> dict:
    """Train ``model`` (sigmoid or softmax output); returns a Keras-style history dict.

    History keys: loss, accuracy (training mode, averaged over the epoch's batches),
    val_loss, val_accuracy. With ``patience`` > 0, stops after that many epochs
    without a lower val_loss and restores the best weights. ``on_epoch(logs)`` is
    called after every epoch (the progress bar).
    """
    tf = import_tensorflow()
    import keras

    binary = model.output_shape[-1] == 1
    X, Xv = tf.constant(x, tf.float32), tf.constant(xv, tf.float32)
    Y, Yv = tf.constant(y, tf.int32), tf.constant(yv, tf.int32)
    n_classes = 2 if binary else model.output_shape[-1]
    weights = np.ones(n_classes, np.float32)
    for k, w in (class_weight or {}).items():
        weights[int(k)] = w
    W = tf.constant(weights)
    variables = [v.value for v in model.trainable_variables]
    opt = _FusedOptimizer(tf, optimizer, lr, variables, momentum)
    n, steps = len(x), math.ceil(len(x) / batch_size)

    def losses(labels, probs):
        if binary:
            return keras.losses.binary_crossentropy(tf.cast(labels[:, None], tf.float32), probs)
        return keras.losses.sparse_categorical_crossentropy(labels, probs)

    def correct(labels, probs):
        pred = tf.cast(probs[:, 0] > 0.5, tf.int32) if binary else tf.argmax(probs, -1, tf.int32)
        return tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.float32))

    @tf.function
    def run_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))
        total_loss, total_right = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = tf.gather(X, idx), tf.gather(Y, idx)
            with tf.GradientTape() as tape:
                probs = model(xb, training=True)
                loss = tf.reduce_mean(losses(yb, probs) * tf.gather(W, yb))
            opt.apply(tape.gradient(loss, variables))
            size = tf.cast(tf.shape(idx)[0], tf.float32)
            total_loss += loss * size
            total_right += correct(yb, probs)
        return total_loss / n, total_right / n

    @tf.function
    def evaluate():
        total_loss, total_right = tf.constant(0.0), tf.constant(0.0)
        for start in tf.range(0, len(xv), 1024):  # bounded activations for large validation sets
            probs = model(Xv[start:start + 1024], training=False)
            total_loss += tf.reduce_sum(losses(Yv[start:start + 1024], probs))
            total_right += correct(Yv[start:start + 1024], probs)
        return total_loss / len(xv), total_right / len(xv)

    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    best, best_weights, waited = math.inf, None, 0
    for epoch in range(epochs):
        loss, acc = run_epoch(tf.constant(epoch))
        val_loss, val_acc = evaluate()
        for key, value in zip(history, (loss, acc, val_loss, val_acc)):
            history[key].append(float(value))
        if on_epoch:
            on_epoch({k: v[-1] for k, v in history.items()})
        if patience:
            if float(val_loss) < best:
                best, best_weights, waited = float(val_loss), model.get_weights(), 0
            else:
                waited += 1
                if waited >= patience:
                    break
    if patience and best_weights is not None:
        model.set_weights(best_weights)
    return history
