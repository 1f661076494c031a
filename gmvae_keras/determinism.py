"""`--deterministic`: TensorFlow's op determinism, and the sums whose order it leaves to the thread schedule.

Op determinism makes every kernel give the same outputs for the same inputs, but one CPU kernel's
rounding also depends on when the graph's other ops run: AddN, the sum of n tensors, accumulates into
the buffer of the first input that no other op still holds and moves that input to the front of the
sum. With three or more inputs the order of the additions, and so the result's last bits, then depends
on whether each input's other consumers have run yet. A training step has many such sums: the tape
adds the gradients of every tensor used three times or more with AddN, and Grappler's arithmetic
optimizer turns chains of additions (the weighted terms of L, a left fold of gradients) into AddN.
Whether the schedule, and so the sum, changes between two runs depends on the model (a second encoder
pass, as the consistency view adds, made it change; docs/EXPERIMENTS.md).

After `enable`, `gradients` adds each tensor's gradients two at a time in a fixed order (a sum of two
is the same whichever buffer it reuses), and the arithmetic optimizer is off. A run without
`--deterministic` computes as before.
"""

import tensorflow as tf

# Set by `enable`: TensorFlow exports no way to read op determinism back.
_enabled = False


def enable():
    """Op determinism, no AddN made by Grappler's arithmetic optimizer, and `gradients` in a fixed order.

    For the whole process from then on, like `tf.config.experimental.enable_op_determinism`.
    """
    global _enabled
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    _enabled = True


def disable():
    """Undoes `enable` (nothing to undo without it): default sums, arithmetic optimizer on, op determinism off."""
    global _enabled
    if not _enabled:
        return
    # TensorFlow exports `enable_op_determinism` only; the way back is in the module that defines it.
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": True})
    _enabled = False


def gradients(tape, target, sources):
    """`tape.gradient(target, sources)`; after `enable`, in a traced function, summed in a fixed order.

    There the gradients reaching a tensor from its consumers are added pairwise, each sum a two-input
    AddN, in the graph's order (`tf.gradients` with `EXPERIMENTAL_TREE`), instead of in one AddN of all
    of them. An eager step runs one op at a time and keeps the tape's sums.
    """
    if _enabled and not tf.executing_eagerly():
        return tf.gradients(target, sources, aggregation_method=tf.AggregationMethod.EXPERIMENTAL_TREE)
    return tape.gradient(target, sources)
