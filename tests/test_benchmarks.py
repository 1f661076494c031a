"""gmvae_keras.benchmarks: the speed benchmarks time the paper's recipes (flags/<name>.cfg)."""

import json
import subprocess
import sys

from gmvae_keras.benchmarks import SETTINGS

from conftest import REPO_ROOT

# The values the benchmarks have timed since they were written out by hand.
EXPECTED = {
    "mnist": dict(
        image_shape=(28, 28, 1),
        num_classes=10,
        batch_size=200,
        feature_size=100,
        latent_size=100,
        k=5,
        margin=2.0,
        gaussian_weight=1.0,
        categorical_weight=1.0,
        assignment_weight=1.0,
        metric_weight=1.0,
        temperature=1.0,
        num_train=60000,
        num_test=10000,
        num_labeled=100,
    ),
    "svhn": dict(
        image_shape=(32, 32, 3),
        num_classes=10,
        batch_size=400,
        feature_size=100,
        latent_size=150,
        k=3,
        margin=0.5,
        gaussian_weight=1.0,
        categorical_weight=1.0,
        assignment_weight=5.0,
        metric_weight=3.0,
        temperature=1.0,
        num_train=73257,
        num_test=26032,
        num_labeled=1000,
    ),
}


def test_settings_read_from_the_flagfiles_are_the_ones_benchmarked_so_far():
    assert SETTINGS == EXPECTED
    # The same JSON too (2.0, not 2): tools/benchmark.py hands a setting to its workers as JSON.
    assert json.dumps(SETTINGS) == json.dumps(EXPECTED)


def test_importing_the_settings_does_not_load_tensorflow():
    code = "import sys, gmvae_keras.benchmarks; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_importing_any_package_module_parses_no_flagfile():
    # Training must not depend on the speed-measuring layer, nor any import on reading a recipe.
    code = (
        "import importlib, pkgutil\n"
        "import absl.flags\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('a flagfile was parsed at import')\n"
        "absl.flags.FlagValues.read_flags_from_files = refuse\n"
        "import gmvae_keras\n"
        "for module in pkgutil.walk_packages(gmvae_keras.__path__, 'gmvae_keras.'):\n"
        "    importlib.import_module(module.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    code = "import sys, gmvae_keras.train; assert 'gmvae_keras.benchmarks' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
