"""tf.distribute for several devices (`mirrored`) and several machines (`multi_worker`).

Each replica trains on its own per-replica batch: `batch_size / replicas`
images, unlabeled first then labeled, built by its input pipeline
(`tf.distribute.Strategy.distribute_datasets_from_function`), so the k-NN
assignment and the lifted structured loss see the labeled half of their own
replica only. `GMVAE.train_step` divides each replica's loss by the number of
replicas, so the summed gradients are those of the global batch's mean loss.
"""

import tensorflow as tf

from gmvae_keras import data as data_lib
from gmvae_keras.config import ConfigError


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


def per_replica_layout(config, replicas, num_classes):
    """(per-replica batch, per-replica labeled part), or ConfigError."""
    labeled = config.resolved_labeled_per_batch()
    if config.batch_size % replicas or labeled % replicas:
        raise ConfigError(
            f"--batch_size={config.batch_size} and its labeled part ({labeled}) must divide evenly "
            f"among the {replicas} replicas"
        )
    batch, labeled = config.batch_size // replicas, labeled // replicas
    if config.num_labeled and labeled < max(num_classes, config.k):
        raise ConfigError(
            f"each of the {replicas} replicas gets {labeled} labeled images a batch, fewer than "
            f"the {num_classes} classes or --k={config.k}; raise --batch_size"
        )
    return batch, labeled


def distributed_train_dataset(strategy, data, config, batch, labeled, initial_epoch=0):
    """The training batches of every replica from epoch `initial_epoch` on, and the global steps of one epoch."""
    pipelines = input_pipelines(strategy)
    replicas_per_pipeline = strategy.num_replicas_in_sync // pipelines
    per_pipeline = len(data.train_labels) // pipelines
    steps = config.steps_per_epoch or per_pipeline // ((batch - labeled) * replicas_per_pipeline)

    def pipeline(context):
        # Keras does not restart a distributed iterator between epochs: the stream holds every epoch left, each
        # of one batch per replica of this pipeline and global step.
        return data_lib.make_train_dataset(
            data,
            batch,
            labeled,
            seed=config.seed,
            **config.train_pipeline_options(),
            num_shards=context.num_input_pipelines,
            shard_index=context.input_pipeline_id,
            epoch=initial_epoch,
            epochs=config.epochs,
            steps=steps * replicas_per_pipeline,
        )

    return strategy.distribute_datasets_from_function(pipeline), steps
