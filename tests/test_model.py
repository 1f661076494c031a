import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from gmvae_keras import GMVAE, TemperatureAnnealing, prediction

SHAPE = (28, 28, 1)


def tiny_model(**overrides):
    kwargs = dict(image_shape=SHAPE, num_classes=3, feature_size=16, latent_size=8, k=2, margin=1.0, seed=0)
    kwargs.update(overrides)
    model = GMVAE(**kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    return model


def batches(num_labeled=6, num_unlabeled=6, steps=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(num_labeled + num_unlabeled) % 3
    # Class-dependent blobs so that there is something to learn.
    images = rng.random((num_labeled + num_unlabeled,) + SHAPE).astype("float32") * 0.3
    for c in range(3):
        images[labels == c, c * 9 : c * 9 + 9, :, :] += 0.6
    element = {
        "images": images,
        "labels": labels[num_unlabeled:].astype("int32"),
        "unlabeled_labels": labels[:num_unlabeled].astype("int32"),
    }
    if num_labeled == 0:
        element = {"images": images, "labels": np.zeros((0,), "int32")}
    return tf.data.Dataset.from_tensors(element).repeat(steps), images, labels


@pytest.mark.parametrize(
    "mode, overrides, num_labeled",
    [
        ("semi_supervised", {}, 6),
        ("ablation", {"metric_weight": 0.0}, 6),
        ("semi_supervised", {"assignment_balance": "vote"}, 6),
        ("clustering", {"assignment_weight": 0.0, "metric_weight": 0.0, "reconstruction": "bce"}, 0),
        ("clustering", {"assignment_weight": 0.0, "metric_weight": 0.0, "categorical_kl": "batch"}, 0),
    ],
)
def test_fit_lowers_the_loss_and_every_term_is_finite(mode, overrides, num_labeled):
    keras.utils.set_random_seed(0)
    model = tiny_model(**overrides)
    ds, _, _ = batches(num_labeled=num_labeled)
    # A batch the model never trains on, from the same classes.
    _, held_out, held_out_labels = batches(num_labeled=num_labeled, seed=1)
    labels = tf.constant(held_out_labels[6:].astype("int32")) if num_labeled else None

    def held_out_losses():
        total = float(model.compute_losses(tf.constant(held_out), labels, training=True)[1])
        return total, prediction.unsupervised_loss(model, held_out)

    before = held_out_losses()
    history = model.fit(ds, epochs=5, verbose=0).history
    for name in ("loss", "reconstruction_loss", "gaussian_loss", "categorical_loss"):
        assert np.all(np.isfinite(history[name])), name
    after = held_out_losses()
    # 20 steps take a quarter or more off the held-out loss (measured 24-40 %), and off its inference-mode
    # generative part 4-12 %.
    assert after[0] < 0.85 * before[0] and after[1] < 0.98 * before[1]
    if mode != "clustering":
        assert np.all(np.isfinite(history["assignment_loss"]))
    if mode == "semi_supervised":
        assert history["metric_loss"][0] > 0 and history["assignment_loss"][0] > 0
        assert 0.0 <= history["assignment_accuracy"][-1] <= 1.0
    if mode == "ablation":  # w_M = 0: L_M is not computed, nor logged
        assert "metric_loss" not in history
    if mode == "clustering":  # no auxiliary terms to log: a line of zeros would say nothing
        assert not {"assignment_loss", "metric_loss", "assignment_accuracy"} & set(history)


def test_evaluate_reports_classification_error_in_percent():
    model = tiny_model()
    _, images, labels = batches()
    predicted = prediction.predict_labels(model, images)
    expected = 100.0 * np.mean(predicted != labels)
    result = model.evaluate(images, labels, batch_size=5, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["error"], expected, rtol=1e-5)


def test_k_larger_than_labeled_part_is_a_clear_error():
    model = tiny_model(k=5)
    ds, _, _ = batches(num_labeled=3)
    with pytest.raises(ValueError, match="k=5 is larger than the number of labeled samples"):
        model.fit(ds, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"metric_weight": -1.0}, "--metric_weight must be >= 0, got -1.0"),
        ({"margin": -0.1}, "--margin must be >= 0, got -0.1"),
        ({"k": 0}, "--k must be >= 1, got 0"),
        ({"reconstruction": "l1"}, "--reconstruction must be one of ['mse', 'bce'], got 'l1'"),
        ({"prediction": "vote"}, "--prediction must be one of ['classifier', 'knn'], got 'vote'"),
        ({"categorical_kl": "marginal"}, "--categorical_kl must be one of ['image', 'batch'], got 'marginal'"),
        ({"prediction": "knn", "labeled_set_size": 1}, "prediction='knn' needs labeled_set_size >= k=2"),
        ({"prediction": "classifier", "labeled_set_size": 6}, "labeled_set_size is for prediction='knn'; got 6"),
        ({"assignment_balance": "distance"}, "--assignment_balance must be one of ['none', 'vote'], got 'distance'"),
        ({"consistency_share": 0.0}, "--consistency_share must be in (0, 1], got 0.0"),
        ({"consistency_share": 1.5}, "--consistency_share must be in (0, 1], got 1.5"),
        ({"num_classes": 1}, "num_classes must be >= 2, got 1"),
    ],
)
def test_invalid_constructor_arguments(bad, words):
    # Each case must be refused for its own reason, not for another argument's.
    with pytest.raises(ValueError, match=re.escape(words)):
        tiny_model(**bad)


def _numpy_knn(features, labeled_features, labeled_labels, k):
    distances = np.sqrt(((features[:, None] - labeled_features[None]) ** 2).sum(-1))
    neighbours = np.argsort(distances, axis=1)[:, :k]
    votes = np.zeros((len(features), 3))
    for i, row in enumerate(neighbours):
        for j in row:
            votes[i, labeled_labels[j]] += 1.0 / (distances[i, j] + 1e-8)
    return votes.argmax(1)


def test_knn_prediction_votes_among_the_stored_labeled_images():
    model = tiny_model(prediction="knn", labeled_set_size=6)
    ds, images, labels = batches()
    with pytest.raises(ValueError, match="expected 6 images"):
        model.set_labeled_set(images[:5], labels[:5])
    with pytest.raises(ValueError, match="labels must be in"):
        model.set_labeled_set(images[6:], labels[6:] + 3)
    model.set_labeled_set(images[6:], labels[6:])
    model.fit(ds, epochs=1, verbose=0)
    expected = _numpy_knn(
        prediction.features_and_logits(model, images)[0],
        prediction.features_and_logits(model, images[6:])[0],
        labels[6:],
        k=2,
    )
    predicted = prediction.predict_labels(model, images, batch_size=5)
    np.testing.assert_array_equal(predicted, expected)
    result = model.evaluate(images, labels, batch_size=5, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["error"], 100.0 * np.mean(predicted != labels), rtol=1e-5)
    # The vote follows the stored labels, not the classifier.
    model.set_labeled_set((images[6:] * 255).astype("uint8"), (labels[6:] + 1) % 3)
    shifted = _numpy_knn(
        prediction.features_and_logits(model, images)[0],
        prediction.features_and_logits(model, images[6:])[0],
        (labels[6:] + 1) % 3,
        k=2,
    )
    np.testing.assert_array_equal(prediction.predict_labels(model, images), shifted)
    assert not np.array_equal(shifted, expected)
    # A labeled set given to the call is voted among instead of the stored one.
    given = prediction.predict_labels(model, images, labeled_set=(images[6:], labels[6:]))
    np.testing.assert_array_equal(given, expected)
    with pytest.raises(ValueError, match="for prediction='knn'"):
        tiny_model().set_labeled_set(images[6:], labels[6:])


def test_knn_model_config_and_keras_file_round_trip(tmp_path):
    model = tiny_model(prediction="knn", labeled_set_size=6)
    ds, images, labels = batches()
    model.set_labeled_set(images[6:], labels[6:])
    model.fit(ds, epochs=1, verbose=0)
    expected = prediction.predict_labels(model, images)

    clone = GMVAE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(prediction.predict_labels(clone, images), expected)

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.labeled_images.numpy(), images[6:])
    np.testing.assert_array_equal(loaded.labeled_image_labels.numpy(), labels[6:])
    np.testing.assert_array_equal(prediction.predict_labels(loaded, images), expected)


def test_inference_methods_are_deterministic():
    model = tiny_model()
    ds, images, _ = batches()
    model.fit(ds, epochs=1, verbose=0)
    p1, p2 = prediction.predict_proba(model, images, batch_size=5), prediction.predict_proba(model, images)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(prediction.predict_labels(model, images), p1.argmax(-1))
    uint8 = (images * 255).astype("uint8")
    np.testing.assert_allclose(
        prediction.predict_proba(model, uint8),
        prediction.predict_proba(model, uint8.astype("float32") / 255),
        atol=1e-6,
    )
    assert prediction.features_and_logits(model, images)[0].shape == (len(images), 16)
    g1, g2 = model.generate(1, 4, seed=3), model.generate(1, 4, seed=3)
    assert g1.shape == (4,) + SHAPE
    np.testing.assert_array_equal(g1, g2)
    assert not np.array_equal(g1, model.generate(1, 4, seed=4))
    with pytest.raises(ValueError, match=re.escape("category must be in [0, 3), got 3")):
        model.generate(3, 1)


def _outputs(model, images):
    return {k: v.numpy() for k, v in model(images, training=False).items()}


def test_model_config_and_keras_file_round_trip(tmp_path):
    model = tiny_model(reconstruction="bce", assignment_balance="vote", consistency_share=0.5)
    ds, images, _ = batches()
    model.fit(ds, epochs=1, verbose=0)  # moves BatchNorm statistics off their init
    model.gumbel_softmax.temperature.assign(0.7)
    expected = _outputs(model, images)

    clone = GMVAE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    for key, value in _outputs(clone, images).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, GMVAE)
    assert all(layer.built for layer in loaded._flatten_layers())
    assert float(loaded.gumbel_softmax.temperature.numpy()) == pytest.approx(0.7)
    for key, value in _outputs(loaded, images).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    # The reloaded model can keep training.
    loaded.fit(ds, epochs=1, verbose=0)


def test_temperature_annealing_schedule_and_logs():
    callback = TemperatureAnnealing(start=1.0, end=0.5, epochs=4)
    assert [callback.temperature_at(e) for e in (0, 2, 4, 10)] == [1.0, 0.75, 0.5, 0.5]
    model = tiny_model()
    ds, _, _ = batches(steps=1)
    history = model.fit(ds, epochs=6, verbose=0, callbacks=[callback]).history
    np.testing.assert_allclose(history["temperature"], [1.0, 0.875, 0.75, 0.625, 0.5, 0.5])
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        TemperatureAnnealing(epochs=0)


def test_views_move_only_the_assignment_loss():
    # L_A is taken on the views; the assignment itself, L_M and the
    # generative terms stay on the images.
    _, images, labels = batches()
    images, true = tf.constant(images), tf.constant(labels[6:], "int32")
    keras.utils.set_random_seed(0)
    model = tiny_model()
    plain, _, assigned = model.compute_losses(images, true, training=False)
    same, _, _ = model.compute_losses(images, true, training=False, views=images)
    # Upside down, so that the class bands of `batches` move and the views' logits differ visibly.
    turned = tf.reverse(images, axis=[1])
    moved, total, with_views = model.compute_losses(images, true, training=False, views=turned)
    np.testing.assert_array_equal(np.asarray(with_views), np.asarray(assigned))
    np.testing.assert_allclose(same["assignment_loss"], plain["assignment_loss"], rtol=1e-6)
    _, logits = model.classify(turned, training=False)
    from gmvae_keras import losses

    expected = losses.assignment_loss(tf.concat([assigned, true], axis=0), logits)
    np.testing.assert_allclose(moved["assignment_loss"], expected, rtol=1e-5)
    assert abs(float(moved["assignment_loss"]) - float(plain["assignment_loss"])) > 1e-4
    for name in ("reconstruction_loss", "metric_loss", "categorical_loss"):
        np.testing.assert_allclose(moved[name], plain[name], rtol=1e-5, err_msg=name)


def test_without_labels_there_is_no_auxiliary_term_views_or_not():
    _, images, _ = batches()
    images = tf.constant(images)
    keras.utils.set_random_seed(0)
    model = tiny_model(metric_weight=0.0)
    plain, total, assigned = model.compute_losses(images, training=False)
    assert assigned is None and set(plain) == {"reconstruction_loss", "gaussian_loss", "categorical_loss"}
    # Neither L_A's k-NN vote nor L_M has labeled images to start from: a view adds nothing.
    terms, _, assigned = model.compute_losses(images, training=False, views=tf.reverse(images, axis=[1]))
    assert assigned is None and set(terms) == set(plain)
    np.testing.assert_allclose(
        float(total),
        float(plain["reconstruction_loss"]) + sum(float(plain[name]) for name in ("gaussian_loss", "categorical_loss")),
        rtol=1e-5,
    )


def test_consistency_share_splits_the_assignment_loss_between_image_and_view():
    _, images, labels = batches()
    images, true = tf.constant(images), tf.constant(labels[6:], "int32")
    turned = tf.reverse(images, axis=[1])
    keras.utils.set_random_seed(0)
    model = tiny_model()
    on_image, _, _ = model.compute_losses(images, true, training=False)
    on_view, _, _ = model.compute_losses(images, true, training=False, views=turned)
    model.consistency_share = 0.25
    split, _, _ = model.compute_losses(images, true, training=False, views=turned)
    expected = 0.25 * float(on_view["assignment_loss"]) + 0.75 * float(on_image["assignment_loss"])
    np.testing.assert_allclose(float(split["assignment_loss"]), expected, rtol=1e-5)
    assert abs(float(on_view["assignment_loss"]) - float(on_image["assignment_loss"])) > 1e-4


# ----------------------------------------------------------- mixed precision


def _full_precision_layers(model):
    """The layers that stay float32 under a mixed policy: the samplers, the prior, q(z|x̂,y)'s variance head."""
    prior = model.gaussian_prior
    return [
        model.gumbel_softmax,
        model.gaussian_sample,
        prior,
        prior.mean,
        prior.variance,
        model.gaussian_inference.variance,
    ]


def _compute_dtypes(model):
    return [layer.compute_dtype for layer in model._flatten_layers(include_self=False)]


@pytest.mark.parametrize("policy, half", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_model_computes_in_16_bits_and_keeps_the_delicate_parts_in_float32(policy, half):
    keras.utils.set_random_seed(0)
    model = tiny_model(dtype=policy)
    delicate = _full_precision_layers(model)
    assert {layer.compute_dtype for layer in delicate} == {"float32"}
    others = [layer for layer in model._flatten_layers(include_self=False) if all(layer is not d for d in delicate)]
    assert {layer.compute_dtype for layer in others} == {half}
    # The weights, the BatchNorm statistics and the temperature stay float32 (the noise seeds are int64).
    assert {v.dtype for v in model.variables} == {"float32", "int64"}
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    ds, images, _ = batches(steps=1)
    outputs = model(images, training=True)
    assert {str(value.dtype) for value in outputs.values()} == {"<dtype: 'float32'>"}
    assert model.encoder(images).dtype == half


@pytest.mark.parametrize("policy, half", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_train_step_losses_are_float32_and_finite(global_dtype_policy, policy, half):
    # Built under the global policy, as train.train_and_evaluate builds it.
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = tiny_model()
    if policy == "mixed_float16":  # with loss scaling, as train.build_model compiles it
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)), jit_compile=False)
    assert model.encoder.blocks[0].compute_dtype == half
    ds, images, _ = batches(steps=1)
    logs = model.train_step(next(iter(ds)))
    for name in ("loss", "reconstruction_loss", "gaussian_loss", "categorical_loss", "assignment_loss", "metric_loss"):
        assert logs[name].dtype == "float32" and np.isfinite(float(logs[name])), name
    terms, total, _ = model.compute_losses(images, training=False)
    assert total.dtype == "float32" and all(term.dtype == "float32" for term in terms.values())
    batch_norm = model.encoder.blocks[1]
    assert batch_norm.moving_mean.dtype == "float32" and batch_norm.moving_variance.dtype == "float32"
    # Adam's moments (all but the step count) stay float32.
    adam = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    moments = [v for v in adam.variables if v.dtype != "int64"]
    assert moments and {v.dtype for v in moments} == {"float32"}


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_saved_mixed_model_reloads_mixed_under_a_float32_global_policy(tmp_path, policy, global_dtype_policy):
    keras.utils.set_random_seed(0)
    model = tiny_model(dtype=policy)
    if policy == "mixed_float16":
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)), jit_compile=False)
    ds, images, _ = batches(steps=2)
    model.fit(ds, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    keras.config.set_dtype_policy("float32")
    loaded = keras.saving.load_model(path)
    assert loaded.dtype_policy.name == policy
    assert type(loaded.optimizer) is type(model.optimizer)
    assert _compute_dtypes(loaded) == _compute_dtypes(model)
    np.testing.assert_array_equal(prediction.predict_proba(loaded, images), prediction.predict_proba(model, images))
    np.testing.assert_array_equal(
        prediction.features_and_logits(loaded, images)[0], prediction.features_and_logits(model, images)[0]
    )


@pytest.mark.parametrize("rule", ["classifier", "knn"])
def test_validation_metrics_log_the_merge_indicators_of_the_models_predictions(rule):
    from gmvae_keras import metrics
    from gmvae_keras.callbacks import ValidationMetrics

    _, images, labels = batches(num_labeled=12, num_unlabeled=12)
    keras.utils.set_random_seed(0)
    model = tiny_model(prediction=rule, labeled_set_size=6 if rule == "knn" else 0)
    if rule == "knn":
        model.set_labeled_set(images[:6], labels[:6])
    model.fit(batches()[0], epochs=1, verbose=0)
    callback = ValidationMetrics(images, labels, batch_size=5, labeled_images=images[:6])
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    predicted = prediction.predict_labels(model, images)
    features = prediction.features_and_logits(model, images)[0]
    assert logs["val_smallest_share"] == metrics.smallest_share(predicted, 3)
    labeled_features = prediction.features_and_logits(model, images[:6])[0]
    assert logs["val_uncovered_share"] == metrics.uncovered_share(features, labeled_features, 9)
    assert logs["val_error"] == pytest.approx(100.0 * np.mean(predicted != labels))


def _clustering_model(**overrides):
    return tiny_model(assignment_weight=1.0, metric_weight=0.0, feature_clusters=1, **overrides)


def test_feature_clusters_train_q_towards_the_fitted_mixture_and_are_saved(tmp_path):
    from gmvae_keras import losses
    from gmvae_keras.layers import FEATURE_MIXTURE_DIMS

    _, images, _ = batches(num_labeled=0)
    images = tf.constant(images)
    keras.utils.set_random_seed(0)
    model = _clustering_model()
    before, _, assigned = model.compute_losses(images, training=False)
    assert assigned is None and float(before["assignment_loss"]) == 0.0  # nothing fitted yet
    rng = np.random.default_rng(0)
    mixture = dict(
        center=rng.normal(size=16),
        projection=rng.normal(size=(16, FEATURE_MIXTURE_DIMS)),
        means=rng.normal(size=(3, FEATURE_MIXTURE_DIMS)),
        variances=rng.uniform(0.5, 2.0, size=(3, FEATURE_MIXTURE_DIMS)),
        weights=np.array([0.2, 0.3, 0.5]),
    )
    model.feature_mixture.assign(**mixture)
    terms, total, _ = model.compute_losses(images, training=False)
    features, logits = model.classify(images, training=False)
    points = (features.numpy() - mixture["center"]) @ mixture["projection"]
    as32 = {name: np.asarray(value, "float32") for name, value in mixture.items()}
    components = losses.mixture_assignment(
        points.astype("float32"), as32["means"], as32["variances"], np.log(as32["weights"])
    )
    expected = losses.assignment_loss(components, logits)
    np.testing.assert_allclose(float(terms["assignment_loss"]), float(expected), rtol=1e-5)
    assert float(expected) > 0
    # The model is chosen by the generative terms alone, whatever L_A is.
    generative = float(terms["reconstruction_loss"]) + float(terms["gaussian_loss"]) + float(terms["categorical_loss"])
    np.testing.assert_allclose(prediction.unsupervised_loss(model, images.numpy()), generative, rtol=1e-5)
    np.testing.assert_allclose(float(total), generative + float(expected), rtol=1e-5)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    again, _, _ = loaded.compute_losses(images, training=False)
    np.testing.assert_allclose(float(again["assignment_loss"]), float(terms["assignment_loss"]), rtol=1e-6)
    with pytest.raises(ValueError, match="means must have shape"):
        model.feature_mixture.assign(**{**mixture, "means": mixture["means"][:2]})
    assert tiny_model().feature_mixture is None


def test_feature_clusters_callback_matches_components_to_the_predicted_categories():
    from gmvae_keras import losses
    from gmvae_keras.callbacks import FeatureClusters

    _, images, _ = batches(num_labeled=30, num_unlabeled=30)
    keras.utils.set_random_seed(0)
    model = _clustering_model()
    model.fit(batches(num_labeled=0)[0], epochs=2, verbose=0)
    callback = FeatureClusters(images, every=2, seed=0)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)  # not an epoch of the period
    assert logs == {} and float(model.feature_mixture.fitted) == 0.0
    callback.on_epoch_end(1, logs)
    mixture = {v.name: v.numpy() for v in model.feature_mixture.weights}
    assert mixture["fitted"] == 1.0
    features, logits = prediction.features_and_logits(model, images)
    points = (features - mixture["center"]) @ mixture["projection"]
    components = losses.mixture_assignment(points, mixture["means"], mixture["variances"], mixture["log_weights"])
    agreement = np.mean(components.numpy() == logits.argmax(axis=-1))
    assert logs["feature_cluster_agreement"] == pytest.approx(agreement, abs=1e-6)


class _StubModel:
    """What `FeatureClusters` reads of a model: three feature blobs that q(y|x̂) names in a cycle."""

    num_classes = 3

    def __init__(self):
        rng = np.random.default_rng(0)
        self.blob = np.repeat(np.arange(3), 40)
        centres = 30.0 * rng.normal(size=(3, 12))
        self.features = (centres[self.blob] + rng.normal(size=(120, 12))).astype("float32")
        self.feature_mixture = self

    def classify(self, images, training=False):
        # Blob b is predicted as category (b + 1) % 3.
        return tf.constant(self.features), tf.constant(np.eye(3, dtype="float32")[(self.blob + 1) % 3] * 5.0)

    def assign(self, center, projection, means, variances, weights):
        self.stored = dict(center=center, projection=projection, means=means, variances=variances, weights=weights)


def test_feature_clusters_callback_gives_each_category_the_component_of_its_images():
    from gmvae_keras import losses
    from gmvae_keras.callbacks import FeatureClusters

    stub = _StubModel()
    callback = FeatureClusters(np.zeros((120, 1)), every=1, seed=0)
    callback.set_model(stub)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["feature_cluster_agreement"] == 1.0
    m = {name: np.asarray(value, "float32") for name, value in stub.stored.items()}
    points = (stub.features - m["center"]) @ m["projection"]
    components = losses.mixture_assignment(points, m["means"], m["variances"], np.log(m["weights"])).numpy()
    np.testing.assert_array_equal(components, (stub.blob + 1) % 3)


def test_epoch_summary_prints_every_logged_score_in_one_line():
    from gmvae_keras.callbacks import EpochSummary

    printed = []
    logs = {
        "loss": 1.0,
        "metric_loss": 0.25,
        "val_error": 2.5,
        "val_nmi": 90.0,
        "val_clusters_used": 9.876,
        "val_smallest_share": 0.912,
        "val_uncovered_share": 0.0634,
        "feature_cluster_agreement": 0.5,
        "temperature": 0.75,
        "epoch_seconds": 12.34,
        "images_per_second": 456.7,
    }
    EpochSummary(10, print_fn=printed.append).on_epoch_end(2, logs)
    assert printed == [
        "epoch 3/10 loss=1.0000 L_M=0.2500 val_error=2.50% val_NMI=90.00% clusters_used=9.88 smallest_share=0.91 "
        "uncovered=0.063 mixture_agreement=0.500 temperature=0.750 time=12.3s 457 img/s"
    ]


def _trained_loss(policy, jit_compile, steps):
    """`(loss before, loss after, steps applied)` of `steps` seeded Adam steps on one batch, noise fixed.

    The loss is that of a held-out batch in training mode (batch statistics: what the steps changed, not the
    moving averages, which a loss-scaled step skipped for overflow still moves).
    """
    keras.utils.set_random_seed(0)
    model = tiny_model(dtype=policy)
    for layer in (model.gumbel_softmax, model.gaussian_sample):
        layer.call = (lambda call: lambda inputs, training=None: call(inputs, training=False))(layer.call)
    optimizer = keras.optimizers.Adam(1e-3)
    if policy == "mixed_float16":  # with loss scaling, as train.build_model compiles it
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    _, held_out, _ = batches(steps=1, seed=1)
    before = float(model.compute_losses(tf.constant(held_out), training=True)[1])
    model.fit(batches(steps=steps)[0], epochs=1, verbose=0)
    after = float(model.compute_losses(tf.constant(held_out), training=True)[1])
    applied = getattr(optimizer, "inner_optimizer", optimizer).iterations.numpy()
    return before, after, int(applied)


@pytest.mark.slow
@pytest.mark.parametrize(
    "policy, jit_compile, share",
    [
        # XLA's float32 kernels round differently from the eager ones on some CPUs, and Adam's first steps, about
        # lr * sign(gradient), turn the rounding of near-zero gradients into whole steps.
        ("float32", True, 0.01),
        ("mixed_bfloat16", True, 0.03),
        ("mixed_bfloat16", False, 0.03),
        ("mixed_float16", False, 0.03),
    ],
)
def test_each_precision_and_compilation_trains_as_float32_does(global_dtype_policy, policy, jit_compile, share):
    # `share`: how far from float32 the loss may end, as a share of what six float32 steps take off it.
    before, after, applied = _trained_loss(policy, jit_compile, steps=6)
    # A loss-scaled step whose gradients overflow float16 is skipped: float32 takes the steps that were applied.
    reference_before, reference_after, _ = _trained_loss("float32", False, steps=applied)
    assert applied >= 2 and reference_before - reference_after > 10.0
    assert abs(after - reference_after) <= share * (reference_before - reference_after)


def test_a_model_scored_by_prediction_is_freed_with_its_traces():
    import gc
    import weakref

    model = tiny_model()
    _, images, _ = batches(steps=1)
    prediction.features_and_logits(model, images)
    prediction.unsupervised_loss(model, images)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
