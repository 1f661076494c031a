"""Models and run directories saved by gmvae_keras 0.1.0 (fixtures/) load after the options it had were removed."""

import json
import shutil
import zipfile

import keras
import numpy as np
import pytest

from gmvae_keras import prediction
from gmvae_keras.settings import ACTED_ONLY_WITH, REMOVED_OPTIONS, REMOVED_VALUES

from conftest import REPO_ROOT, write_idx_dataset

FIXTURES = REPO_ROOT / "tests" / "fixtures"


def _load(path):
    import keras

    import gmvae_keras.model  # noqa: F401  registers the classes

    return keras.saving.load_model(path)


def _with_config(source, target, **changes):
    """A copy of the `.keras` file `source` whose model config has `changes`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            content = old.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(content)
                config["config"].update(changes)
                content = json.dumps(config).encode()
            new.writestr(item, content)
    return target


def test_a_model_saved_by_0_1_0_loads_and_predicts_as_it_did():
    model = _load(FIXTURES / "model-0.1.0.keras")
    expected = np.load(FIXTURES / "model-0.1.0-outputs.npz")
    # Saved with the removed options at their "off" values, which are dropped.
    assert not hasattr(model, "assignment_confidence") and not hasattr(model, "warmup_steps")
    assert model.prediction == "knn" and model.assignment_balance == "vote"
    # 0.1.0's predict_proba was q(y|x̂); a knn model's predict_proba is now the vote's shares.
    _, logits = prediction.features_and_logits(model, expected["images"])
    classifier = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    np.testing.assert_allclose(classifier, expected["probabilities"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(prediction.predict_proba(model, expected["images"]).argmax(-1), expected["labels"])
    np.testing.assert_allclose(
        prediction.features_and_logits(model, expected["images"])[0], expected["features"], rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(prediction.predict_labels(model, expected["images"]), expected["labels"])


@pytest.mark.parametrize(
    "changes, named, version",
    [
        ({"assignment_confidence": 0.5}, "--assignment_confidence=0.5", "removed after gmvae_keras 0.1.0"),
        ({"assignment_balance": "distance"}, "--assignment_balance='distance'", "removed after gmvae_keras 0.1.0"),
        ({"warmup_steps": 70}, "--warmup_steps=70", "that only development versions after gmvae_keras 0.1.0 had"),
        ({"hard_gumbel": True}, "--hard_gumbel=True", "that only development versions after gmvae_keras 0.1.0 had"),
        (
            {"assignment_weighting": "majority"},
            "--assignment_weighting='majority'",
            "that only development versions after gmvae_keras 0.1.0 had",
        ),
    ],
)
def test_a_model_that_used_a_removed_option_is_refused_naming_it(tmp_path, changes, named, version):
    path = _with_config(FIXTURES / "model-0.1.0.keras", tmp_path / "old.keras", **changes)
    with pytest.raises(Exception, match=version) as refused:
        _load(path)
    assert named in str(refused.value)


def _old_run(tmp_path, **changes):
    """The fixture's run directory (config.json of a 0.1.0 run), on data written here."""
    data = tmp_path / "data"
    write_idx_dataset(data, n_train=200, n_test=60, seed=3)
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run-0.1.0", run)
    values = json.loads((run / "config.json").read_text())
    # It holds every removed flag at "off" (`warmup_steps` was GMVAE's argument, not a flag).
    assert all(values[name] == off for name, (off, _) in REMOVED_OPTIONS.items() if name != "warmup_steps")
    values.update(changes)
    (run / "config.json").write_text(json.dumps(values))
    values = {key: value for key, value in values.items() if key not in REMOVED_OPTIONS}
    values["data_dir"] = str(data)
    return run, values


def test_a_run_directory_of_0_1_0_resumes(tmp_path):
    from gmvae_keras.config import Config
    from gmvae_keras.train import train_and_evaluate

    run, values = _old_run(tmp_path)
    metrics = train_and_evaluate(Config(**values), run)
    assert metrics["epochs"] == 1
    assert not set(REMOVED_OPTIONS) & set(json.loads((run / "config.json").read_text()))


@pytest.mark.parametrize(
    "changes, version",
    [
        ({"ema_momentum": 0.999}, "removed after gmvae_keras 0.1.0"),
        ({"assignment_confidence": 0.9}, "removed after gmvae_keras 0.1.0"),
        ({"assignment_balance": "distance"}, "removed after gmvae_keras 0.1.0"),
        ({"auxiliary_warmup_epochs": 0.5}, "that only development versions after gmvae_keras 0.1.0 had"),
        ({"augment_shift": 2}, "that only development versions after gmvae_keras 0.1.0 had"),
        ({"augment_flip": True}, "that only development versions after gmvae_keras 0.1.0 had"),
        ({"lr_schedule": "step"}, "that only development versions after gmvae_keras 0.1.0 had"),
    ],
)
def test_a_run_directory_that_used_a_removed_option_is_refused_and_left_alone(tmp_path, changes, version):
    from gmvae_keras.config import Config, ConfigError
    from gmvae_keras.train import train_and_evaluate

    run, values = _old_run(tmp_path, **changes)
    values = {key: value for key, value in values.items() if key not in changes}
    before = sorted(p.name for p in run.iterdir()), (run / "config.json").read_text()
    name = next(iter(changes))
    with pytest.raises(ConfigError, match=f"config.json sets --{name}=.*{version}"):
        train_and_evaluate(Config(**values), run)
    assert (sorted(p.name for p in run.iterdir()), (run / "config.json").read_text()) == before


def _other_than(off):
    return not off if isinstance(off, bool) else off + 1 if isinstance(off, (int, float)) else f"not {off}"


@pytest.mark.parametrize(
    "name, value",
    [(name, _other_than(off)) for name, (off, _) in REMOVED_OPTIONS.items()]
    + [(name, removed[0]) for name, (removed, _) in REMOVED_VALUES.items()],
)
def test_every_removed_option_or_value_is_dropped_at_off_and_refused_otherwise_in_one_line(name, value):
    from gmvae_keras.config import Config, ConfigError

    if name in REMOVED_OPTIONS:
        assert Config.from_dict({name: REMOVED_OPTIONS[name][0]}) == Config()
    # An option that acted only with another's value is refused only together with it.
    enabling = dict([ACTED_ONLY_WITH[name]]) if name in ACTED_ONLY_WITH else {}
    with pytest.raises(ConfigError) as refused:
        Config.from_dict({name: value, **enabling}, source="config.json")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"config.json sets --{name}={value!r}, ")
    release = (REMOVED_OPTIONS.get(name) or REMOVED_VALUES[name])[1]
    assert message.endswith(
        f"load it with gmvae_keras {release}" if release else "load it with the commit that wrote it"
    )


def test_a_removed_option_that_had_no_effect_under_the_runs_schedule_loads_at_any_value():
    from gmvae_keras.config import Config

    values = {"lr_schedule": "cosine", "lr_decay_epochs": 10, "lr_decay_rate": 0.1}
    assert Config.from_dict(values) == Config(lr_schedule="cosine")
