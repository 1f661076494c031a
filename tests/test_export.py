"""The export's contract: `probabilities` is a distribution whose argmax is `label`, in both prediction rules."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gmvae_keras import GMVAE, prediction
from gmvae_keras.export import export_saved_model

SHAPE = (28, 28, 1)


def _model(rule, labeled_images, labeled_labels, **kwargs):
    knn = rule == "knn"
    model = GMVAE(
        image_shape=SHAPE,
        num_classes=3,
        feature_size=16,
        latent_size=8,
        k=3,
        prediction=rule,
        labeled_set_size=len(labeled_labels) if knn else 0,
        seed=0,
        **kwargs,
    )
    if knn:
        model.set_labeled_set(labeled_images, labeled_labels)
    return model


def _data():
    rng = np.random.default_rng(0)
    labeled = rng.integers(0, 256, size=(9,) + SHAPE, dtype=np.uint8)
    # A batch that holds two labeled images themselves: the vote must stay finite at distance 0.
    images = np.concatenate([labeled[:2], rng.integers(0, 256, size=(30,) + SHAPE, dtype=np.uint8)])
    return labeled, np.arange(9) % 3, images


def _conv_ops(function):
    library = function.graph.as_graph_def().library.function
    return sum(node.op.startswith("Conv2D") for f in library for node in f.node_def)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    labeled, labels, images = _data()
    out = {}
    for rule in ("classifier", "knn"):
        model = _model(rule, labeled, labels)
        export_dir = export_saved_model(model, tmp_path_factory.mktemp(rule) / "export")
        out[rule] = (model, tf.saved_model.load(str(export_dir)))
    return out, labeled, labels, images


@pytest.mark.parametrize("rule", ["classifier", "knn"])
def test_probabilities_are_a_distribution_whose_argmax_is_the_label(exports, rule):
    out, labeled, labels, images = exports
    model, loaded = out[rule]
    served = loaded.signatures["serving_uint8"](images=tf.constant(images))
    probabilities = served["probabilities"].numpy()
    assert probabilities.shape == (len(images), 3) and np.all(np.isfinite(probabilities))
    assert np.all(probabilities >= 0) and np.allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(-1), served["label"].numpy())
    # Rows 0 and 1 are at distance ~0 from a labeled image, where 1/distance magnifies rounding noise.
    np.testing.assert_allclose(probabilities[2:], prediction.predict_proba(model, images)[2:], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(served["label"].numpy(), prediction.predict_labels(model, images))
    np.testing.assert_array_equal(
        prediction.predict_proba(model, images).argmax(-1), prediction.predict_labels(model, images)
    )
    # q(y|x̂) in both modes.
    _, logits = prediction.features_and_logits(model, images)
    classifier = np.exp(logits - logits.max(-1, keepdims=True))
    classifier /= classifier.sum(-1, keepdims=True)
    np.testing.assert_allclose(served["classifier_probabilities"].numpy(), classifier, rtol=1e-5, atol=1e-6)
    if rule == "classifier":
        np.testing.assert_allclose(probabilities, classifier, rtol=1e-5, atol=1e-6)
    else:
        # The two labeled images vote for their own class with nearly all the weight.
        np.testing.assert_array_equal(served["label"].numpy()[:2], labels[:2])
        assert np.all(probabilities[:2].max(-1) > 0.99)


def test_knn_export_encodes_only_the_served_images(exports):
    # The labeled images' features are stored at export: the knn graph runs the encoder once, as the classifier's.
    out = exports[0]
    convs = {name: _conv_ops(loaded.signatures["serving_default"]) for name, (_, loaded) in out.items()}
    assert convs["knn"] == convs["classifier"] > 0
    variables = [v.shape.as_list() for v in out["knn"][1].signatures["serving_default"].graph.variables]
    assert [9, 16] in variables


def test_each_rule_can_be_asked_of_either_model(exports):
    out, labeled, labels, images = exports
    for rule, (model, _) in out.items():
        both = {
            other: prediction.predict_labels(model, images, other, (labeled, labels), batch_size=7)
            for other in prediction.RULES
        }
        _, logits = prediction.features_and_logits(model, images)
        np.testing.assert_array_equal(both["classifier"], logits.argmax(-1))
        np.testing.assert_array_equal(both[rule], prediction.predict_labels(model, images))
        np.testing.assert_array_equal(both["knn"][:2], labels[:2])
    with pytest.raises(ValueError, match="needs a labeled_set"):
        prediction.predict_labels(out["classifier"][0], images, "knn")


@pytest.mark.parametrize("rule", ["classifier", "knn"])
def test_a_mixed_bfloat16_model_serves_float32_and_predicts_as_the_trained_model(tmp_path, rule):
    labeled, labels, images = _data()
    keras.utils.set_random_seed(0)
    model = _model(rule, labeled, labels, dtype="mixed_bfloat16")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    batch = {"images": np.concatenate([images[2:8], labeled[:6]]).astype("float32") / 255.0, "labels": labels[:6]}
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), epochs=1, verbose=0)
    assert model.encoder.blocks[0].compute_dtype == "bfloat16"

    loaded = tf.saved_model.load(str(export_saved_model(model, tmp_path / "export")))
    serve = loaded.signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].dtype == tf.float32
    served = serve(images=tf.constant(images.astype("float32") / 255.0))
    for name in ("probabilities", "classifier_probabilities", "features"):
        assert served[name].dtype == tf.float32, name
        assert np.all(np.isfinite(served[name].numpy())), name
    np.testing.assert_array_equal(served["label"].numpy(), prediction.predict_labels(model, images))
    np.testing.assert_array_equal(served["probabilities"].numpy().argmax(-1), served["label"].numpy())
    np.testing.assert_allclose(
        served["features"].numpy(), prediction.features_and_logits(model, images)[0], rtol=1e-6, atol=1e-6
    )
