"""Smoke test of tools/benchmark.py: it runs and its JSON has every field.

Benchmarks are not tests: only the structure and the signs are checked.
"""

import json
import subprocess
import sys

from conftest import REPO_ROOT

SETTING_FIELDS = (
    "train_images_per_second",
    "pipeline_images_per_second",
    "inference_images_per_second",
    "flops_per_train_image",
    "achieved_gflops",
    "matmul_peak_gflops",
    "peak_rss_mb",
)


def test_benchmark_quick_prints_one_json_object_with_every_field(tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable, str(REPO_ROOT / "tools" / "benchmark.py"),
        "--quick", "--no-torch", "--settings", "mnist",
        "--steps", "1", "--repeats", "1", "--matmul_size", "256", "--out", str(out),
    ]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == printed

    assert printed["quick"] is True
    assert isinstance(printed["flops_convention"], str) and printed["flops_convention"]
    environment = printed["environment"]
    for key in ("tensorflow", "keras", "torch", "cpu_model", "cpu_count", "tf_intra_op_threads", "jit_compile"):
        assert key in environment, key
    assert environment["jit_compile"] is False
    assert environment["torch"] is None
    assert any("torch" in note for note in printed["notes"])

    assert list(printed["settings"]) == ["mnist"]
    mnist = printed["settings"]["mnist"]
    for field in SETTING_FIELDS:
        assert isinstance(mnist[field], (int, float)) and mnist[field] > 0, (field, mnist.get(field))
    assert mnist["batch_size"] == 200
    assert mnist["torch_train_images_per_second"] is None
    assert mnist["speedup_vs_torch"] is None


def test_conv_kernels_tool_times_every_stride_one_encoder_convolution(tmp_path):
    out = tmp_path / "kernels.json"
    command = [sys.executable, str(REPO_ROOT / "tools" / "conv_kernels.py"), "--settings", "mnist", "--repeats", "1", "--out", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["settings"]["mnist"]
    # 28x28 encoder: kernels 5-5-4-5-3 with strides 1-1-2-2-1.
    assert [row["shape"] for row in rows] == [
        "200x28x28x1 -> 16, kernel 5",
        "200x24x24x16 -> 32, kernel 5",
        "200x3x3x128 -> 100, kernel 3",
    ]
    for row in rows:
        assert row["relative_difference"] < 1e-5
        assert all(row[key] > 0 for key in ("forward", "input_gradient_tf", "input_gradient_forward_conv", "filter_gradient", "filter_gradient_forward_conv"))


def test_ab_benchmark_alternates_two_trees_and_reports_paired_ratios(tmp_path):
    out = tmp_path / "ab.json"
    command = [sys.executable, str(REPO_ROOT / "tools" / "ab_benchmark.py"), "--a", str(REPO_ROOT), "--b", str(REPO_ROOT),
               "--rounds", "2", "--steps", "1", "--warmup", "1", "--out", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    mnist = result["settings"]["mnist"]
    assert len(mnist["a_images_per_second"]) == len(mnist["b_images_per_second"]) == 2
    assert len(mnist["paired_ratios_b_over_a"]) == 2 and mnist["median_paired_ratio_b_over_a"] > 0


def test_ab_benchmark_refuses_a_directory_without_the_package(tmp_path):
    command = [sys.executable, str(REPO_ROOT / "tools" / "ab_benchmark.py"), "--a", str(tmp_path), "--b", str(REPO_ROOT)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "holds no gmvae_keras package" in proc.stderr and "Traceback" not in proc.stderr
