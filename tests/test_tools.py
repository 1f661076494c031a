"""Smoke tests of the tools: they run, and their JSON has every field (or agrees with an independent computation).

Benchmarks are not tests: only the structure and the signs are checked.
"""

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

import gmvae_keras

from conftest import REPO_ROOT

SETTING_FIELDS = (
    "train_images_per_second",
    "pipeline_images_per_second",
    "inference_images_per_second",
    "inference_knn_images_per_second",
    "flops_per_train_image",
    "achieved_gflops",
    "matmul_peak_gflops",
    "peak_rss_mb",
)


TOOLS = REPO_ROOT / "tools"


def _env():
    """The environment of a tool's subprocess: it imports the gmvae_keras these tests import."""
    package_parent = str(pathlib.Path(gmvae_keras.__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))


def test_no_tool_edits_sys_path():
    # The tools import the installed gmvae_keras; a path edit would shadow it with this checkout's.
    offenders = [path.name for path in sorted(TOOLS.glob("*.py")) if "sys.path" in path.read_text()]
    assert offenders == []


@pytest.mark.slow
def test_benchmark_quick_prints_one_json_object_with_every_field(tmp_path):
    # mixed_bfloat16 takes every branch float32 does, and its own.
    precision = "mixed_bfloat16"
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(TOOLS / "benchmark.py"),
        "--quick",
        "--no-torch",
        f"--precision={precision}",
        "--settings",
        "mnist",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--matmul_size",
        "256",
        "--out",
        str(out),
    ]
    proc = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == printed

    assert printed["quick"] is True
    assert printed["precision"] == printed["environment"]["precision"] == precision
    assert isinstance(printed["bfloat16_hardware"], bool)
    assert isinstance(printed["flops_convention"], str) and printed["flops_convention"]
    environment = printed["environment"]
    for key in ("tensorflow", "keras", "torch", "cpu_model", "cpu_count", "tf_intra_op_threads", "jit_compile"):
        assert key in environment, key
    assert environment["jit_compile"] is False
    assert environment["torch"] is None
    assert any("torch" in note for note in printed["notes"])
    assert 0 <= printed["busy_cores_before"] <= os.cpu_count()

    assert list(printed["settings"]) == ["mnist"]
    mnist = printed["settings"]["mnist"]
    for field in SETTING_FIELDS:
        assert isinstance(mnist[field], (int, float)) and mnist[field] > 0, (field, mnist.get(field))
    assert mnist["batch_size"] == 200
    assert mnist["torch_train_images_per_second"] is None
    assert mnist["speedup_vs_torch"] is None


def test_benchmark_says_when_its_precision_has_no_comparable_figure():
    tool = _load_tool("benchmark")
    no_bfloat16 = {"avx2": True, "avx512_bf16": False, "amx_bf16": False}
    assert tool.bfloat16_hardware(no_bfloat16) is False
    assert tool.bfloat16_hardware({**no_bfloat16, "amx_bf16": True}) is True
    assert tool.bfloat16_hardware({**no_bfloat16, "avx512_bf16": True}) is True
    (note,) = tool.precision_notes("mixed_bfloat16", no_bfloat16)
    assert "emulated, slowly" in note and "not comparable" in note
    (note,) = tool.precision_notes("mixed_bfloat16", no_bfloat16, jit_compile=True)
    assert "emulated, by XLA" in note and "not comparable" in note
    assert tool.precision_notes("mixed_bfloat16", {**no_bfloat16, "amx_bf16": True}) == []
    assert tool.precision_notes("float32", no_bfloat16) == []
    # The PyTorch port has no float16 counterpart on a CPU: null with a reason, even when torch is there.
    args = tool.parse_args(["--precision=mixed_float16"])
    assert "float16 autocast on a CPU is no comparable baseline" in tool._torch_status(args)
    assert tool._torch_status(tool.parse_args(["--no-torch", "--precision=mixed_bfloat16"])) == "skipped (--no-torch)"
    with pytest.raises(SystemExit):
        tool.parse_args(["--precision=fp8"])


def test_benchmark_counts_the_cores_other_work_keeps_busy_now():
    tool = _load_tool("benchmark")
    # user nice system idle iowait irq softirq steal, in clock ticks summed over all cores
    first = [100, 0, 50, 800, 50, 0, 0, 0]
    second = [250, 0, 100, 1050, 100, 0, 0, 0]
    assert tool.busy_share(first, second) == pytest.approx(200 / 500)
    assert tool.busy_share(first, first) == 0.0
    assert tool.busy_cores(0.01, stat="/nonexistent/stat") is None


def test_ab_benchmark_alternates_two_trees_and_reports_paired_ratios(tmp_path, monkeypatch, capsys):
    tool = _load_tool("ab_benchmark")
    trees = {}
    for name in ("a", "b"):
        (tmp_path / name / "gmvae_keras").mkdir(parents=True)
        (tmp_path / name / "gmvae_keras" / "__init__.py").touch()
        trees[(tmp_path / name).resolve()] = name
    # Images/s of each tree, round by round: B/A is 1.5, 1.1 and 0.9.
    rates = {"a": iter([100.0, 200.0, 100.0]), "b": iter([150.0, 220.0, 90.0])}
    calls = []

    def fake_sample(tree, setting, steps, warmup):
        calls.append((trees[tree], setting, steps, warmup))
        return {"images_per_second": next(rates[trees[tree]]), "cpu_utilization": 1.0, "package": str(tree)}

    monkeypatch.setattr(tool, "sample", fake_sample)
    out = tmp_path / "ab.json"
    args = ["--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--rounds", "3", "--warmup", "1"]
    assert tool.main(args + ["--out", str(out)]) == 0
    # A then B, B then A, A then B: the drift of the machine favours neither tree.
    assert [name for name, *_ in calls] == ["a", "b", "b", "a", "a", "b"]
    assert all(setting is tool.SETTINGS["mnist"] and (steps, warmup) == (15, 1) for _, setting, steps, warmup in calls)
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert result["a"] == str((tmp_path / "a").resolve()) and result["rounds"] == 3
    mnist = result["settings"]["mnist"]
    assert mnist["a_images_per_second"] == [100.0, 200.0, 100.0]
    assert mnist["b_images_per_second"] == [150.0, 220.0, 90.0]
    assert mnist["a_median"] == 100.0 and mnist["b_median"] == 150.0
    assert mnist["paired_ratios_b_over_a"] == pytest.approx([1.5, 1.1, 0.9])
    assert mnist["median_paired_ratio_b_over_a"] == pytest.approx(1.1) and mnist["rounds_b_faster"] == 2


def test_ab_benchmark_times_a_tree_in_a_worker_that_imports_its_package():
    tool = _load_tool("ab_benchmark")
    current = pathlib.Path(gmvae_keras.__file__).resolve().parents[1]
    result = tool.sample(current, tool.SETTINGS["mnist"], steps=1, warmup=1)
    assert pathlib.Path(result["package"]) == current / "gmvae_keras"
    assert result["images_per_second"] > 0 and result["cpu_utilization"] > 0


def test_ab_benchmark_refuses_a_directory_without_the_package(tmp_path):
    command = [sys.executable, str(TOOLS / "ab_benchmark.py"), "--a", str(tmp_path), "--b", str(REPO_ROOT)]
    proc = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "holds no gmvae_keras package" in proc.stderr and "Traceback" not in proc.stderr


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finished_seed(sweep, seed, flags, test_error):
    model_dir = sweep / f"seed-{seed}"
    model_dir.mkdir(parents=True)
    from gmvae_keras.flagfiles import config_from_args

    (model_dir / "config.json").write_text(config_from_args(flags).to_json())
    metrics = {
        "test_error_best": test_error,
        "test_error_last": test_error + 1.0,
        "test_error_classifier_best": test_error + 0.5,
        "test_error_knn_best": test_error,
        "test_cluster_accuracy_best": 100.0 - test_error,
        "test_nmi_best": 90.0 - test_error,
        "test_cluster_accuracy_last": 99.0 - test_error,
        "test_nmi_last": 89.0 - test_error,
        "best_epoch": 9,
        "epochs": 10,
        "train_seconds": 1800.0,
        "train_images_per_second": 300.0 + seed,
        "cpu_model": "Test CPU",
        "seed": seed,
    }
    (model_dir / "metrics.json").write_text(json.dumps(metrics))


def test_reproduce_reads_finished_seeds_only_when_their_flags_match(tmp_path, capsys):
    tool = _load_tool("reproduce")
    argv = [
        "--dataset=mnist",
        "--seeds=10-11",
        "--settings=cpu",
        f"--runs_dir={tmp_path}",
        "--",
        "--image_summary_every=0",
    ]
    args = tool.parse_args(argv)
    assert args.seeds == [10, 11]
    args.num_labeled = 100
    sweep = tmp_path / "mnist-100-cpu"
    for seed, error in ((10, 2.0), (11, 3.0)):
        _finished_seed(sweep, seed, tool.run_flags(args, seed, sweep / f"seed-{seed}"), error)
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"[reproduce] mnist-100-cpu: seeds 10, 11 into {sweep}\n")
    assert (
        "| mnist | 100 | full model | cpu | 1.94 (± 0.49) | 2.50 (± 0.71; worst 3.00) | 3.50 (± 0.71; worst 4.00) "
        "| 10, 11 | 10 | 0.50 | 310 |"
    ) in out
    assert "| 11 | 9 | 3.00 | 4.00 | 3.50 | 3.00 | 311 |" in out
    assert "CPU: Test CPU." in out
    assert (sweep / "results.md").read_text() in out
    # One seed has no spread to print.
    assert tool.main([argv[0], "--seeds=10-10", *argv[2:]]) == 0
    assert "| cpu | 1.94 (± 0.49) | 2.00 (one seed) | 3.00 (one seed) | 10 |" in capsys.readouterr().out

    # Other flags than the finished runs had: refused in one line, nothing trained or written.
    (sweep / "results.md").unlink()
    assert tool.main(argv[:-1] + ["--k=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert "--k=5 there, 3 now" in err
    assert not (sweep / "results.md").exists()
    assert tool.main(argv[:-1] + ["--no_such_flag=1"]) == 2
    assert "no_such_flag" in capsys.readouterr().err


@pytest.mark.parametrize(
    "broken, content, message",
    [
        ("metrics.json", '{"cut short', "cannot read {path}: "),
        ("config.json", '{"cut short', "cannot read {path}: "),
        ("config.json", "[1, 2]", "{path} is not a JSON object"),
        ("metrics.json", "[1, 2]", "{path} is not a JSON object"),
    ],
)
def test_reproduce_refuses_a_finished_seed_with_unreadable_files_in_one_line(
    tmp_path, capsys, broken, content, message
):
    tool = _load_tool("reproduce")
    argv = ["--dataset=mnist", "--seeds=10-10", "--settings=cpu", f"--runs_dir={tmp_path}"]
    args = tool.parse_args(argv)
    args.num_labeled = 100
    model_dir = tmp_path / "mnist-100-cpu" / "seed-10"
    _finished_seed(model_dir.parent, 10, tool.run_flags(args, 10, model_dir), 2.0)
    (model_dir / broken).write_text(content)
    assert tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert message.format(path=model_dir / broken) in err
    assert not (model_dir.parent / "results.md").exists()


def test_reproduce_clustering_prints_table_3(tmp_path, capsys):
    tool = _load_tool("reproduce")
    argv = ["--dataset=mnist", "--mode=clustering", "--seeds=10,12", f"--runs_dir={tmp_path}"]
    args = tool.parse_args(argv)
    args.num_labeled = tool.default_num_labeled("mnist", "clustering")
    assert args.num_labeled == 0
    sweep = tmp_path / "mnist-clustering-paper"
    for seed, error in ((10, 10.0), (12, 6.0)):
        flags = tool.run_flags(args, seed, sweep / f"seed-{seed}")
        assert "--mode=clustering" in flags
        _finished_seed(sweep, seed, flags, error)
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert "ACC 92.46 (best 97.36), NMI 88.16 (best 93.44)" in out
    assert "| lowest validation loss | 92.00 (± 2.83; best 94.00) | 82.00 (± 2.83; best 84.00) | 10, 12 |" in out
    assert "| last epoch | 91.00 (± 2.83; best 93.00) | 81.00 (± 2.83; best 83.00) |" in out
    assert "| 12 | 9 | 94.00 | 84.00 | 93.00 | 83.00 |" in out


def test_reproduce_refuses_clustering_without_its_settings(capsys):
    tool = _load_tool("reproduce")
    for argv, message in (
        (["--dataset=svhn", "--mode=clustering"], "no clustering settings for svhn"),
        (["--dataset=mnist", "--mode=clustering", "--ablation"], "--ablation is for"),
    ):
        with pytest.raises(SystemExit):
            tool.parse_args(argv)
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, seeds",
    [
        ("3", [0, 1, 2]),
        ("10", list(range(10))),
        ("0-11", list(range(12))),
        ("10-14", [10, 11, 12, 13, 14]),
        ("10,12", [10, 12]),
        ("7-7", [7]),
    ],
)
def test_reproduce_seed_forms(text, seeds):
    assert _load_tool("reproduce").parse_seeds(text) == seeds


@pytest.mark.parametrize(
    "text, message",
    [(text, "--seeds must be") for text in ["0", "-1", "5-3", "1,1", "a", "1-2-3", "1,-2", ""]]
    # A bare N above 10 reads like one of the reporting seeds 10-19.
    + [("12", "--seeds=12 would run seeds 0-11: write that, or --seeds=12-12 for seed 12 alone")],
)
def test_reproduce_refuses_bad_seeds_in_one_line(text, message, capsys):
    tool = _load_tool("reproduce")
    with pytest.raises(SystemExit) as exit_info:
        tool.parse_args(["--dataset=mnist", f"--seeds={text}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_reproduce_passes_a_sigterm_on_to_the_training(tmp_path):
    tool = _load_tool("reproduce")
    # Stands in for a seed's training: it records the SIGTERM and exits 0, or sleeps a minute.
    child = [
        sys.executable,
        "-c",
        "import pathlib, signal, sys, time\n"
        f"d = pathlib.Path({str(tmp_path)!r})\n"
        "signal.signal(signal.SIGTERM, lambda *a: ((d / 'terminated').touch(), sys.exit(0)))\n"
        "(d / 'ready').touch()\n"
        "time.sleep(60)\n",
    ]

    def send_when_ready():
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    stray = []

    def outer(signum, frame):  # a SIGTERM that misses run_seed's handler lands here, not on pytest
        stray.append(signum)

    before = signal.signal(signal.SIGTERM, outer)
    try:
        threading.Thread(target=send_when_ready, daemon=True).start()
        code = tool.run_seed(child)
        restored = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert (tmp_path / "terminated").exists(), "the training did not get the SIGTERM"
    # Stopped, not finished, although the training exited 0: the sweep must not go on.
    assert code == 128 + signal.SIGTERM
    assert restored is outer and not stray


def test_the_speed_tools_read_one_set_of_settings():
    from gmvae_keras.benchmarks import SETTINGS

    assert _load_tool("benchmark").SETTINGS is SETTINGS
    assert _load_tool("ab_benchmark").SETTINGS is SETTINGS
    for setting in SETTINGS.values():
        assert setting["batch_size"] % 2 == 0  # half unlabeled, half labeled


def test_compare_commits_compares_within_a_relative_tolerance_and_refuses_bad_input(tmp_path, capsys):
    tool = _load_tool("compare_commits")
    rows = tool.compare({"loss": 100.0, "error": 5.0, "only": 1.0}, {"loss": 100.0005, "error": 5.1}, 1e-5)
    assert rows["loss"]["same"] and not rows["error"]["same"] and not rows["only"]["same"]
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["HEAD", "HEAD", f"--datasets_dir={tmp_path}", "--recipes=cifar"])
    assert exit_info.value.code == 2 and "unknown recipes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["HEAD", "HEAD", f"--datasets_dir={tmp_path}", "--recipes=mnist-paper"])
    assert exit_info.value.code == 2 and "is not a folder" in capsys.readouterr().err
    # The same commit twice would compare one run with itself: refused before any worktree or run.
    (tmp_path / "mnist").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["HEAD", "HEAD~0", f"--datasets_dir={tmp_path}", "--recipes=mnist-paper", f"--workdir={tmp_path}/w"])
    assert exit_info.value.code == 2 and "are the same commit" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_compare_commits_reads_synthetic_svhn_when_the_real_files_are_absent(tmp_path):
    import numpy as np

    from gmvae_keras import data as data_lib

    tool = _load_tool("compare_commits")
    folder = tool.data_dir("svhn", tmp_path / "datasets", tmp_path / "work")
    assert folder == tmp_path / "work" / "synthetic-svhn"
    (train_x, train_y), (test_x, test_y), num_classes, _ = data_lib.load_raw("svhn", data_dir=folder)
    assert train_x.shape == (3000, 32, 32, 3) and test_x.shape == (500, 32, 32, 3) and num_classes == 10
    assert np.bincount(train_y).tolist() == [300] * 10
    # Written once: both commits of a comparison read the same files.
    stamp = (folder / "train_32x32.mat").stat().st_mtime_ns
    assert tool.data_dir("svhn", tmp_path / "datasets", tmp_path / "work") == folder
    assert (folder / "train_32x32.mat").stat().st_mtime_ns == stamp
    (tmp_path / "datasets" / "svhn").mkdir(parents=True)
    assert tool.data_dir("svhn", tmp_path / "datasets", tmp_path / "work") == tmp_path / "datasets" / "svhn"
