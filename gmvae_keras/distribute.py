"""tf.distribute for several devices (`mirrored`) and several machines (`multi_worker`).

Each replica trains on a batch of its own (`batches.batch_layout`, built in
`train._train_batches`); `GMVAE.train_step` divides each replica's loss by
the number of replicas, so the summed gradients are those of the global
batch's mean loss.
"""

import tensorflow as tf


def make_strategy(name):
    """The tf.distribute strategy called `name`.

    `multi_worker` reads the cluster from the `TF_CONFIG` environment variable and
    must be created before TensorFlow runs any op in the process. `Config.validate` checks the name.
    """
    strategies = {
        "default": tf.distribute.get_strategy,
        "mirrored": tf.distribute.MirroredStrategy,
        "multi_worker": tf.distribute.MultiWorkerMirroredStrategy,
    }
    return strategies[name]()


def is_chief(strategy):
    """Whether this process writes checkpoints, logs and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def input_pipelines(strategy):
    """Input pipelines (workers) of the strategy: one per machine."""
    return max(1, strategy.num_replicas_in_sync // len(strategy.extended.worker_devices))
