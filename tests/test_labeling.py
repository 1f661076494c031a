"""Which images to label next: the ranking, its CSV, `--add_labeled` and `--init_from`."""

import csv
import io
import json

import keras
import numpy as np
import pytest

from gmvae_keras import data as data_lib
from gmvae_keras import labeling, suggest
from gmvae_keras.config import Config, ConfigError, RunError, read_config
from gmvae_keras.data import DataError
from gmvae_keras.train import load_data, train_and_evaluate

from conftest import tiny_config, write_idx_dataset


def _scene(seed=0):
    """Features of two labeled classes 10 apart, a tight clump of 30 near-copies halfway between them (the most
    uncertain images), a group of 20 far from every labeled image, and 40 images beside the labeled ones."""
    rng = np.random.default_rng(seed)
    labeled = np.concatenate([rng.normal([0, 0], 0.3, (5, 2)), rng.normal([10, 0], 0.3, (5, 2))])
    labels = np.repeat([0, 1], 5)
    clump = rng.normal([5, 0], 0.01, (30, 2))
    far = rng.normal([0, 20], 0.5, (20, 2))
    near = np.concatenate([rng.normal([0, 0], 0.5, (20, 2)), rng.normal([10, 0], 0.5, (20, 2))])
    features = np.concatenate([clump, far, near]).astype(np.float32)
    parts = {"clump": np.arange(30), "far": np.arange(30, 50), "near": np.arange(50, 90)}
    return features, labeled.astype(np.float32), labels, parts


def _rank(features, labeled, labels, count, **kwargs):
    classes = np.zeros(len(features), np.int64)
    return labeling.rank(features, labeled, labels, classes, count, num_classes=2, k=3, **kwargs)


def test_uncertainty_is_one_minus_the_margin_between_the_votes_two_largest_shares():
    # Three labeled images 1, 2 and 4 away from the unlabeled one vote with weights 1, 1/2 and 1/4: shares 4/7,
    # 2/7 and 1/7, a margin of 2/7 between the two largest.
    labeled = np.array([[1.0, 0.0], [0.0, 2.0], [-4.0, 0.0]], np.float32)
    uncertainty, vote = labeling.vote_uncertainty(np.zeros((1, 2), np.float32), labeled, [0, 1, 2], 3, k=3)
    np.testing.assert_allclose(uncertainty, [1.0 - 2.0 / 7.0], rtol=1e-4)
    assert vote.tolist() == [0]


def test_the_picks_cover_the_unlabeled_group_and_take_one_of_the_near_copies():
    features, labeled, labels, parts = _scene()
    picks = _rank(features, labeled, labels, count=6, signal="both")
    chosen = picks["index"]
    assert len(set(chosen.tolist())) == 6
    # The group no labeled image is near is suggested, and said to be uncovered.
    in_far = np.isin(chosen, parts["far"])
    assert in_far.any() and set(picks["signal"][in_far].tolist()) == {"uncovered"}
    # The spread rule: 30 near-copies of the most uncertain image give one suggestion, not six.
    assert np.isin(chosen, parts["clump"]).sum() == 1
    assert len(set(picks["cluster"].tolist())) == 6
    assert np.all(np.diff(picks["score"]) <= 0)


def test_both_covers_the_uncovered_groups_first_then_asks_the_least_sure_votes_among_the_covered():
    features, labeled, labels, parts = _scene()
    picks = _rank(features, labeled, labels, count=6, signal="both")
    kinds = picks["signal"].tolist()
    # As many clusters as picks: the far group and the clump have no labeled image and come first; the rest of the
    # picks are the covered clusters' least sure images, not more clusters of the far group.
    assert kinds[:2] == ["uncovered", "uncovered"] and "uncovered" not in kinds[2:]
    assert np.isin(picks["index"][2:], parts["near"]).all()
    # An uncovered cluster's priority is its size (each image counts as fully uncertain), and it gives its most
    # typical image, the one nearest its centre.
    np.testing.assert_allclose(picks["score"][:2] * len(features), [30, 20], atol=1e-3)
    far = features[parts["far"]]
    typical = parts["far"][np.linalg.norm(far - far.mean(axis=0), axis=1).argmin()]
    assert picks["index"][np.isin(picks["index"], parts["far"])].tolist() == [typical]


def test_farthest_takes_the_far_group_first_and_keeps_every_two_picks_the_last_score_apart():
    features, labeled, labels, parts = _scene()
    picks = _rank(features, labeled, labels, count=5, signal="farthest")
    assert picks["index"][0] in parts["far"] and set(picks["signal"].tolist()) == {"farthest"}
    assert np.all(np.diff(picks["score"]) <= 0)
    chosen = features[picks["index"]]
    apart = np.linalg.norm(chosen[:, None] - chosen[None], axis=-1)[np.triu_indices(5, 1)]
    assert apart.min() >= picks["score"][-1] - 1e-6
    nearest_labeled = np.linalg.norm(features[:, None] - labeled[None], axis=-1).min(axis=1)
    assert picks["score"][0] == pytest.approx(nearest_labeled.max(), rel=1e-5)


def test_farthest_picks_every_image_once_even_duplicates_of_each_other_and_of_a_labeled_image():
    features = np.array([[0, 5], [0, 5], [3, 0], [3, 0], [0, 0]], np.float32)  # the last one is the labeled image
    picks = _rank(features, features[4:], np.array([0]), count=5, signal="farthest")
    assert sorted(picks["index"].tolist()) == [0, 1, 2, 3, 4]


def test_clusters_give_their_preferred_row_by_priority_and_a_second_only_after_every_cluster_gave_one():
    clusters = np.array([0, 0, 0, 1, 1, 2])
    priority = np.array([5.0, 9.0, 1.0])
    preference = np.array([0.1, 0.7, 0.3, 0.2, 0.9, 0.5])
    np.testing.assert_array_equal(labeling._one_per_cluster(clusters, priority, preference, 6), [4, 1, 5, 3, 2, 0])
    np.testing.assert_array_equal(labeling._one_per_cluster(clusters, priority, preference, 2), [4, 1])


def test_the_default_ranking_takes_the_least_sure_votes_one_per_cluster():
    features, labeled, labels, parts = _scene()
    picks = _rank(features, labeled, labels, count=6)
    assert "uncovered" not in picks["signal"].tolist()
    # The clump's vote is split evenly: its cluster leads, and its 30 near-copies give one suggestion.
    assert picks["index"][0] in parts["clump"] and np.isin(picks["index"], parts["clump"]).sum() == 1
    assert len(set(picks["cluster"].tolist())) == 6 and np.all(np.diff(picks["score"]) <= 0)


def test_uncertainty_alone_sees_no_uncovered_group_and_coverage_alone_takes_the_largest_first():
    features, labeled, labels, parts = _scene()
    alone = _rank(features, labeled, labels, count=3, signal="uncertainty")
    assert "uncovered" not in alone["signal"].tolist()
    assert alone["index"][0] in parts["clump"]  # the vote there is split evenly
    coverage = _rank(features, labeled, labels, count=3, signal="coverage")
    # The 30 near-copies are the largest group without a labeled image.
    assert set(coverage["signal"].tolist()) == {"uncovered"} and coverage["index"][0] in parts["clump"]


def test_a_pick_where_the_vote_and_the_classifier_disagree_says_so():
    features, labeled, labels, parts = _scene()
    classes = np.ones(len(features), np.int64)  # q(y|x̂) says class 1 everywhere
    picks = labeling.rank(features, labeled, labels, classes, 8, num_classes=2, k=3, signal="uncertainty")
    kinds = dict(zip(picks["index"].tolist(), picks["signal"].tolist(), strict=True))
    near_zero = [i for i in kinds if i in parts["near"][:20]]
    near_one = [i for i in kinds if i in parts["near"][20:]]
    assert near_zero and all(kinds[i] == "disagreement" for i in near_zero)
    assert near_one and all(kinds[i] == "uncertain" for i in near_one)


@pytest.mark.parametrize("count", [0, 91])
def test_a_count_outside_the_unlabeled_pool_is_refused(count):
    features, labeled, labels, _ = _scene()
    with pytest.raises(labeling.LabelingError, match="--count"):
        _rank(features, labeled, labels, count=count)


def test_the_csv_names_each_pick_and_reads_back_as_its_indices():
    features, labeled, labels, _ = _scene()
    picks = _rank(features, labeled, labels, count=4)
    rows = np.arange(1000, 1090)
    text = io.StringIO()
    labeling.write_csv(text, picks, np.arange(90) % 2, ("cat", "dog"), rows=rows)
    table = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert text.getvalue().splitlines()[0] == "rank,index,predicted,score,signal,cluster"
    assert [int(r["index"]) for r in table] == (rows[picks["index"]]).tolist()
    assert [r["predicted"] for r in table] == [("cat", "dog")[i % 2] for i in picks["index"]]
    files = io.StringIO()
    labeling.write_csv(files, picks, np.zeros(90, int), ("cat", "dog"), names=[f"u/{i}.png" for i in range(90)])
    assert list(csv.DictReader(io.StringIO(files.getvalue())))[0]["path"] == f"u/{picks['index'][0]}.png"


def test_read_indices_refuses_what_is_not_a_list_of_rows(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("rank,index\n1,7\n2,3\n3,7\n")
    np.testing.assert_array_equal(labeling.read_indices(good), [3, 7])
    (tmp_path / "excel.csv").write_bytes("\ufeffindex\n7\n".encode())  # a spreadsheet's byte-order mark
    np.testing.assert_array_equal(labeling.read_indices(tmp_path / "excel.csv"), [7])
    for name, text, message in (
        ("paths.csv", "rank,path\n1,a.png\n", "no `index` column"),
        ("header.csv", "index\n", "lists no row"),
        ("words.csv", "index\nseven\n", "integer"),
        ("huge.csv", f"index\n{10**20}\n", "integer"),
        ("negative.csv", "index\n-1\n", "negative"),
    ):
        (tmp_path / name).write_text(text)
        with pytest.raises(labeling.LabelingError, match=message):
            labeling.read_indices(tmp_path / name)
    with pytest.raises(labeling.LabelingError, match="cannot read"):
        labeling.read_indices(tmp_path / "missing.csv")


def test_add_labeled_joins_the_draw_with_the_true_labels_and_refuses_unknown_rows():
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8), np.arange(60) % 3)
    data = data_lib.split_data("toy", train, train, 3, num_labeled=6, seed=0)
    positions = np.setdiff1d(np.arange(len(data.train_labels)), data.labeled_indices)[:4]
    more = data_lib.add_labeled(data, data.train_rows[positions])
    np.testing.assert_array_equal(more.labeled_indices, np.union1d(data.labeled_indices, positions))
    np.testing.assert_array_equal(more.labeled_labels, data.train_labels[more.labeled_indices])
    with pytest.raises(DataError, match="rows 0..59; got 60$"):
        data_lib.add_labeled(data, [60])
    with pytest.raises(DataError, match="rows 0..59; got -1$"):  # the row at fault, not the largest
        data_lib.add_labeled(data, [-1, 5])
    validation_row = np.setdiff1d(np.arange(60), data.train_rows)[0]
    with pytest.raises(DataError, match=f"row {validation_row} is a validation image"):
        data_lib.add_labeled(data, [data.train_rows[0], validation_row])
    unknown = data_lib.from_arrays(train[0][:6], np.arange(6) % 3, unlabeled_images=train[0][6:9])
    with pytest.raises(DataError, match="no rows of an official train set"):
        data_lib.add_labeled(unknown, [7])


def test_a_row_names_the_same_image_whatever_the_seeds_validation_split():
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8), np.arange(60) % 3)
    first, other = (data_lib.split_data("toy", train, train, 3, num_labeled=6, seed=s) for s in (0, 1))
    assert not np.array_equal(first.train_rows, other.train_rows)
    rows = np.intersect1d(first.train_rows, other.train_rows)[:5]
    for data in (first, other):
        added = data_lib.add_labeled(data, rows)
        new = np.setdiff1d(added.labeled_indices, data.labeled_indices)
        already = data.train_rows[data.labeled_indices]
        np.testing.assert_array_equal(np.sort(data.train_rows[new]), np.setdiff1d(rows, already))
        np.testing.assert_array_equal(data.train_images[data.train_rows.searchsorted(rows)], train[0][rows])


def test_add_labeled_is_for_the_labels_of_a_built_in_semi_supervised_run(tmp_path):
    with pytest.raises(ConfigError, match="--add_labeled"):
        Config(dataset="folder", data_dir=str(tmp_path), add_labeled="x.csv")
    with pytest.raises(ConfigError, match="--add_labeled"):
        Config(mode="clustering", num_labeled=0, assignment_weight=0, metric_weight=0, add_labeled="x.csv")


@pytest.fixture(scope="module")
def suggested(tiny_run, tmp_path_factory):
    """`suggest` on the tiny run: `(csv path, rows)`."""
    out = tmp_path_factory.mktemp("suggest") / "next.csv"
    assert suggest.main([f"--model_dir={tiny_run}", "--count=6", f"--out={out}"]) == 0
    return out, list(csv.DictReader(out.open()))


def test_suggest_ranks_unlabeled_train_rows_of_the_run_with_its_predictions(tiny_run, suggested):
    import tensorflow as tf

    _, rows = suggested
    indices = [int(r["index"]) for r in rows]  # rows of the official train set
    assert len(set(indices)) == 6 and [int(r["rank"]) for r in rows] == list(range(1, 7))
    data = load_data(read_config(tiny_run))
    positions = data.train_rows.searchsorted(indices)
    np.testing.assert_array_equal(data.train_rows[positions], indices)  # none is a validation image
    assert not set(positions.tolist()) & set(np.load(tiny_run / "labeled_indices.npy").tolist())
    served = tf.saved_model.load(str(tiny_run / "export")).signatures["serving_uint8"]
    label = served(images=tf.constant(data.train_images[positions]))["label"].numpy()
    assert [r["predicted"] for r in rows] == [data.class_names[c] for c in label]
    assert len({r["cluster"] for r in rows}) == 6
    # The default ranking is uncertainty's, which counts every cluster as covered.
    assert {r["signal"] for r in rows} <= {"uncertain", "disagreement"}


def test_suggest_ranks_by_uncertainty_unless_told_otherwise(tiny_run, suggested, tmp_path):
    out, _ = suggested
    for signal, same in (("uncertainty", True), ("coverage", False)):
        assert (
            suggest.main([f"--model_dir={tiny_run}", "--count=6", f"--out={tmp_path / signal}", f"--signal={signal}"])
            == 0
        )
        assert ((tmp_path / signal).read_text() == out.read_text()) is same


def test_a_second_round_adds_the_suggestions_and_starts_from_the_first_rounds_weights(tiny_run, suggested, tmp_path):
    out, rows = suggested
    data_dir = json.loads((tiny_run / "config.json").read_text())["data_dir"]
    # Adam's first step moves each weight by about the learning rate: at 1e-12 the copied weights stay.
    config = tiny_config(
        data_dir, epochs=1, steps_per_epoch=1, learning_rate=1e-12, add_labeled=str(out), init_from=str(tiny_run)
    )
    metrics = train_and_evaluate(config, tmp_path / "second")
    labeled = np.load(tmp_path / "second" / "labeled_indices.npy")
    train_rows = load_data(read_config(tiny_run)).train_rows
    added = train_rows.searchsorted([int(r["index"]) for r in rows])
    expected = np.union1d(np.load(tiny_run / "labeled_indices.npy"), added)
    np.testing.assert_array_equal(labeled, expected)
    assert metrics["num_labeled"] == len(expected)
    first = keras.saving.load_model(tiny_run / "best.keras")
    second = keras.saving.load_model(sorted((tmp_path / "second" / "checkpoints").iterdir())[-1])
    for name in ("encoder", "decoder", "gaussian_prior", "categorical_inference", "gaussian_inference"):
        for a, b in zip(getattr(first, name).trainable_weights, getattr(second, name).trainable_weights, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9)
    assert int(second.optimizer.iterations.numpy()) == 1  # the optimizer starts afresh


def test_copy_networks_copies_the_networks_and_keeps_the_temperature_and_the_labeled_set():
    from gmvae_keras import GMVAE

    kwargs = dict(image_shape=(28, 28, 1), num_classes=3, feature_size=8, latent_size=4, k=2, prediction="knn")
    source = GMVAE(**kwargs, labeled_set_size=3, seed=1)
    source.gumbel_softmax.temperature.assign(0.3)
    # Trained BatchNorm averages, which a fresh model's (0 and 1) would not tell from uncopied ones.
    averages = [w for name in GMVAE.NETWORKS for w in getattr(source, name).non_trainable_weights]
    assert averages
    for i, w in enumerate(averages):
        w.assign(np.full(w.shape, 2.0 + i, "float32"))
    target = GMVAE(**kwargs, labeled_set_size=6, seed=2)
    target.set_labeled_set(np.full((6, 28, 28, 1), 255, np.uint8), np.arange(6) % 3)
    target.copy_networks(source)
    for name in GMVAE.NETWORKS:
        for a, b in zip(getattr(source, name).weights, getattr(target, name).weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(target.gumbel_softmax.temperature.numpy()) == 1.0
    assert float(np.min(target.labeled_images.numpy())) == 1.0
    with pytest.raises(ValueError, match="latent_size 4 there, 5 here"):
        GMVAE(**{**kwargs, "latent_size": 5}, labeled_set_size=3).copy_networks(source)


def test_init_from_refuses_a_run_that_does_not_fit_and_writes_nothing(tiny_run, tmp_path):
    data_dir = json.loads((tiny_run / "config.json").read_text())["data_dir"]
    for overrides, message in (
        ({"feature_size": 6}, "feature_size 8 there, 6 here"),
        ({"init_from": str(tmp_path)}, "--init_from: .* holds no run"),
    ):
        config = tiny_config(data_dir, **{"init_from": str(tiny_run), **overrides})
        with pytest.raises((ConfigError, data_lib.DataError, ValueError), match=message):
            train_and_evaluate(config, tmp_path / "refused")
        assert not (tmp_path / "refused").exists()
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "best.keras").write_bytes(b"not a zip file")
    with pytest.raises(RunError, match="cannot load the model .*best.keras: "):
        train_and_evaluate(tiny_config(data_dir, init_from=str(broken)), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(24):
        folder = tmp_path / "three" / ("labeled/" + "abc"[i % 3] if i < 12 else "unlabeled")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
    config = tiny_config(tmp_path / "three", dataset="folder", init_from=str(tiny_run))
    with pytest.raises(ConfigError, match="num_classes 10 there, 3 here"):
        train_and_evaluate(config, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_suggest_refuses_bad_arguments_in_one_line(tiny_run, tmp_path, capsys):
    clustering = tmp_path / "clustering"
    clustering.mkdir()
    values = dict(mode="clustering", num_labeled=0, assignment_weight=0, metric_weight=0)
    (clustering / "config.json").write_text(Config(**values).to_json())
    import shutil

    import tensorflow as tf

    old, unlabeled = tmp_path / "old", tmp_path / "no_labeled_set"
    for copy in (old, unlabeled):
        shutil.copytree(tiny_run, copy)
    (unlabeled / "labeled_indices.npy").unlink()
    shutil.rmtree(old / "export")  # an export without the outputs `suggest` reads

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def probabilities(images):
        return {"probabilities": tf.zeros([tf.shape(images)[0], 10])}

    tf.saved_model.save(tf.Module(), str(old / "export"), signatures={"serving_bytes": probabilities})
    for args, message in (
        ([f"--model_dir={old}", "--count=3"], "predates suggestions"),
        ([f"--model_dir={unlabeled}", "--count=3"], "cannot read the labeled set"),
        (["--count=0"], "--count must be >= 1"),
        (["--count=-3"], "--count must be >= 1"),
        (["--count=100000"], "--count=100000: must be in 1.."),
        ([f"--model_dir={clustering}", "--count=3"], "a clustering run"),
        ([f"--model_dir={tmp_path / 'none'}", "--count=3"], "does not exist"),
        ([f"--model_dir={tmp_path}", "--count=3"], "no config.json"),
    ):
        if not any(a.startswith("--model_dir") for a in args):
            args = [f"--model_dir={tiny_run}", *args]
        assert suggest.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, err


def test_the_random_baselines_draw_unlabeled_train_rows_class_balanced_or_uniformly(tiny_run, monkeypatch):
    import importlib

    from conftest import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT / "tools"))
    simulate = importlib.import_module("simulate_labeling")
    data = load_data(read_config(tiny_run))
    first = np.load(tiny_run / "labeled_indices.npy")
    drawn = {}
    for balanced in (True, False):
        rows = simulate.random_rows(data, first, 10, seed=0, balanced=balanced)
        np.testing.assert_array_equal(rows, simulate.random_rows(data, first, 10, seed=0, balanced=balanced))
        positions = data.train_rows.searchsorted(rows)
        np.testing.assert_array_equal(data.train_rows[positions], rows)  # train images, not validation ones
        assert len(set(rows.tolist())) == 10 and not set(positions.tolist()) & set(first.tolist())
        drawn[balanced] = data.train_labels[positions]
    np.testing.assert_array_equal(np.bincount(drawn[True], minlength=10), np.ones(10))
    assert not np.array_equal(np.bincount(drawn[False], minlength=10), np.ones(10))


@pytest.mark.slow
def test_simulate_labeling_runs_the_loop_and_its_baselines(tmp_path):
    import subprocess
    import sys

    from conftest import REPO_ROOT, TINY_RUN

    data_dir = tmp_path / "data"
    write_idx_dataset(data_dir, n_train=200, n_test=50, seed=4)
    tiny = {k: v for k, v in TINY_RUN.items() if k not in ("dataset", "num_labeled")}
    extra = [f"--{k}={v}" for k, v in tiny.items()] + ["--epochs=2", "--steps_per_epoch=2"]
    command = [sys.executable, str(REPO_ROOT / "tools" / "simulate_labeling.py"), "--dataset=mnist"]
    command += ["--settings=paper", "--seeds=0-0", "--num_labeled=20", "--count=10", f"--data_dir={data_dir}"]
    command += [f"--runs_dir={tmp_path / 'runs'}"]
    first_call = [*command, "--strategies=suggested,balanced,init_from", "--", *extra]
    done = subprocess.run(first_call, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["runs"]["0"]) == {"first", "suggested-uncertainty", "init_from-uncertainty", "balanced"}
    assert set(summary["runs"]["0"]["suggested-uncertainty"]) == {"val_error_best", "test_error_best", "train_seconds"}
    seed = tmp_path / "runs" / "mnist-20+10-paper" / "seed-0"
    data = load_data(read_config(seed / "first"))
    first = np.load(seed / "first" / "labeled_indices.npy")
    # Another strategy is compared against the same first round: the finished runs are read, only its own trains.
    second = subprocess.run(
        [*command, "--strategies=uniform", "--", *extra], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
    )
    assert second.returncode == 0, second.stderr[-3000:]
    steps = [line for line in second.stdout.splitlines() if " -m gmvae_keras." in line]  # no suggest, one training
    assert len(steps) == 1 and "gmvae_keras.main --dataset=mnist --seed=0 " in steps[0], steps
    assert f"--model_dir={seed / 'uniform'} " in steps[0], steps
    assert set(json.loads(second.stdout.strip().splitlines()[-1])["runs"]["0"]) == {"first", "uniform"}
    added = {}
    for name in ("suggested-uncertainty", "uniform", "balanced"):
        rows = labeling.read_indices(seed / f"{name}.csv")
        added[name] = data.train_rows.searchsorted(rows)
        np.testing.assert_array_equal(data.train_rows[added[name]], rows)  # train images, not validation ones
        assert len(rows) == 10 and not set(added[name]) & set(first), name
        labeled = np.load(seed / name / "labeled_indices.npy")
        np.testing.assert_array_equal(labeled, np.union1d(first, added[name]))
    picked = summary["suggested"]["0"]["uncertainty"]  # what the suggestions were, by the true labels
    assert picked["classes"] == np.bincount(data.train_labels[added["suggested-uncertainty"]], minlength=10).tolist()
    assert sum(picked["signals"].values()) == 10 and 0 <= picked["wrong_in_first"] <= 10
    # The class-balanced draw: one of each of the ten classes on top of the first run's labels.
    np.testing.assert_array_equal(np.bincount(data.train_labels[added["balanced"]], minlength=10), np.ones(10))
    resumed = json.loads((seed / "init_from-uncertainty" / "config.json").read_text())
    assert resumed["init_from"] == str(seed / "first") and resumed["epochs"] == 1


def test_simulate_labeling_refuses_flags_its_finished_runs_did_not_have(tmp_path, monkeypatch, capsys):
    import importlib

    from conftest import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT / "tools"))
    simulate = importlib.import_module("simulate_labeling")
    monkeypatch.setattr(simulate, "one_seed", lambda *a: pytest.fail("trained with other flags"))
    argv = ["--dataset=mnist", "--seeds=0-0", f"--runs_dir={tmp_path}", "--", "--epochs=2"]
    sweep = tmp_path / "mnist-100+100-cpu"
    sweep.mkdir()
    (sweep / "flags.json").write_text(json.dumps(["--epochs=3"]))
    assert simulate.main(argv) == 2
    err = capsys.readouterr().err
    assert "trained with the flags --epochs=3 after --, not --epochs=2" in err and err.count("\n") == 1, err
    (sweep / "flags.json").unlink()  # a new sweep records its flags
    monkeypatch.setattr(simulate, "one_seed", lambda *a: ({}, {}))
    monkeypatch.setattr(simulate, "table", lambda *a: "")
    assert simulate.main(argv) == 0
    assert json.loads((sweep / "flags.json").read_text()) == ["--epochs=2"]
