"""jflow.benchmark: the CLI at a tiny size writes a plausible record; argument errors."""
import json
import os
import subprocess
import sys

import pytest

from jflow import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "deq.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "jflow.benchmark", "--config=configs/deq_raft.py:smoke",
           "--height=32", "--width=48", "--iters=3", "--repeats=2", f"--output={out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_cli_record_fields_are_plausible(record):
    rec, stdout = record
    assert rec["model"] == "deq_raft-T" and rec["mode"] == "infer"
    assert (rec["height"], rec["width"], rec["batch"], rec["iters"]) == (32, 48, 1, 3)
    assert 1e6 < rec["params"] < 1e7  # DEQ-RAFT Tiny: a few million parameters
    assert len(rec["times_ms"]) == 2 and min(rec["times_ms"]) <= rec["time_ms"] <= max(rec["times_ms"])
    assert 0 < rec["time_ms"] < 60_000 and rec["compile_s"] > 0
    mem = rec["memory_mib"]
    # Arguments hold the float32 parameters (4 bytes each) and two images.
    assert mem["argument"] >= rec["params"] * 4 / benchmark.MIB
    assert mem["temp"] > 0 and mem["total"] >= mem["argument"]
    assert 1 <= rec["solver_nstep"] <= 3
    # executed work: the solver loop at its mean steps (XLA counts its body once); no more
    # than the jaxpr's count at the step limit; a CPU has no rated peak: the matrix product's
    assert rec["jaxpr_gflops"] >= rec["gflops"] > 0 and rec["gflops_per_s"] > 0
    assert rec["loop_trips"] == rec["solver_nstep"]
    assert rec["peak_source"] == "matmul" and rec["host_cpu"]
    assert rec["peak_fraction"] == pytest.approx(rec["gflops_per_s"] / rec["peak_gflops"])
    assert 0 < rec["peak_fraction"] < 1  # a tiny model, far from the dense product's rate
    header, row = stdout.splitlines()[:2]
    assert header.split(",") == list(benchmark.CSV_COLUMNS)
    assert row.startswith(f"deq_raft-T,{rec['params']},32,48,1,infer,3,")


def test_csv_row_prefers_device_peak():
    rec = {"model": "raft", "params": 10, "height": 8, "width": 16, "batch": 1, "mode": "train",
           "iters": None, "time_ms": 1.234, "memory_mib": {"total": 5.0}, "device_peak_mib": 7.5}
    assert benchmark.csv_row(rec)["Memory(MiB)"] == "7.5"
    assert benchmark.csv_row(dict(rec, device_peak_mib=None))["Memory(MiB)"] == "5.0"
    assert benchmark.csv_row(rec)["Time(ms)"] == "1.23"


@pytest.mark.parametrize("kwargs, match", [
    (dict(height=30, width=48), "multiples of 8"),
    (dict(height=32, width=48, batch=0), "--batch"),
    (dict(height=32, width=48, repeats=0), "--repeats"),
    (dict(height=32, width=48, mode="eval"), "--mode"),
])
def test_bad_arguments_are_named(kwargs, match):
    from configs_for_tests import smoke_config

    with pytest.raises(ValueError, match=match):
        benchmark.benchmark(smoke_config(), **kwargs)


def test_side_by_side_alternates_and_shows_default_iterations():
    spec = "configs/raft.py:small model.eval_iters=2"
    configs = [benchmark.parse_compare(spec), benchmark.parse_compare(spec[:-1] + "4")]
    recs = benchmark.side_by_side(configs, 32, 48, repeats=2)
    assert [r["label"] for r in recs] == [c[0] for c in configs]
    assert [r["iters"] for r in recs] == [2, 4]  # the models' defaults, no --iters given
    assert recs[0]["ratio"] == 1.0 and recs[1]["ratio"] > 0
    assert all(len(r["times_ms"]) == 2 for r in recs)
    # two more update iterations: more work, by the same amount per iteration
    assert recs[1]["gflops"] > recs[0]["gflops"]
    assert benchmark.csv_row(recs[1])["Iters"] == 4


def test_compare_spec_sets_a_deq_field_the_recipe_leaves_at_its_default():
    spec = "configs/deq_raft.py:smoke deq.unroll_impl='python' deq.f_max_steps=5"
    assert "unroll_impl" not in benchmark.parse_compare(spec.split()[0])[1].deq
    config = benchmark.parse_compare(spec)[1]
    assert config.deq.unroll_impl == "python" and config.deq.f_max_steps == 5


@pytest.mark.parametrize("spec", ["configs/raft.py:small model.nope=1", "configs/raft.py iters",
                                  "configs/deq_raft.py:smoke deq.nope=1",
                                  "configs/raft.py:small deq.unroll_impl=python"])
def test_compare_spec_errors_name_the_item(spec):
    with pytest.raises(ValueError, match="--compare"):
        benchmark.parse_compare(spec)


def test_peak_lookup():
    assert benchmark.peak_gflops("NVIDIA H200") == 67_000.0
    assert benchmark.peak_gflops("cpu") is None
    assert benchmark.peak_gflops("cpu", 2.0) == 2000.0
    assert benchmark.reference_peak("NVIDIA H200") == (67_000.0, "rated")
    assert benchmark.reference_peak("cpu", 2.0) == (2000.0, "given")
    gflops, source = benchmark.reference_peak("cpu", backend="cpu")
    assert source == "matmul" and gflops == benchmark.matmul_peak_gflops()
    # an accelerator without a rated peak: none (a small product says little about it)
    assert benchmark.reference_peak("Some GPU", backend="gpu") == (None, None)
    assert benchmark.reference_peak("Some GPU", 5.0, backend="gpu") == (5000.0, "given")


def test_matmul_peak_is_a_rate_measured_once_per_size(monkeypatch):
    import jax

    kind = str(jax.devices()[0].device_kind)
    monkeypatch.setattr(benchmark, "_MATMUL_PEAKS", {(kind, 64): 123.0})
    assert benchmark.matmul_peak_gflops(n=64) == 123.0  # cached: not measured again
    rate = benchmark.matmul_peak_gflops(n=32, repeats=2)  # another size: measured
    assert 0 < rate < 1e7 and benchmark._MATMUL_PEAKS[(kind, 32)] == rate


def test_host_cpu_names_model_family_and_avx512(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "flags\t\t: fpu avx2 avx512f avx512bw\n\nprocessor\t: 1\nmodel name\t: other\n")
    name = benchmark.host_cpu(str(info))
    assert name.startswith("AMD EPYC (family 25, model 17, avx512f, ")
    info.write_text("model name\t: Intel Xeon\nflags\t\t: fpu avx2\n")
    assert "avx512f" not in benchmark.host_cpu(str(info))
    assert benchmark.host_cpu(str(tmp_path / "missing")) == "unknown"
