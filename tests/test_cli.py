"""CLI error handling: user errors print one clear line, no traceback; other errors propagate."""
import pytest

from jflow.cli import friendly_errors
from jflow.data.errors import DatasetError
from jflow.io import FlowFileError


@pytest.mark.parametrize("error", [
    DatasetError("MpiSintel: folder '/x/Sintel/training/clean' not found\nExpected layout: ..."),
    FlowFileError("/x/a.flo: wrong magic number"),
])
def test_user_errors_exit_1_with_the_message_only(error, capsys):
    def main(argv):
        raise error

    with pytest.raises(SystemExit) as exit_info:
        friendly_errors(main)(["prog"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(error) in err and "Traceback" not in err


def test_programming_errors_still_raise():
    def main(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        friendly_errors(main)(["prog"])


def test_main_returns_normally():
    assert friendly_errors(lambda argv: 7)(["prog"]) == 7


def _run_cli(args, tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("entry", ["module", "console_script"])
def test_convert_error_is_one_line_under_python_m_and_entry_point(entry, tmp_path):
    """Under ``python -m`` the module runs as ``__main__``: the ConversionError raised inside jflow
    must still be the class the handler catches (it runs the imported module), and the console
    script ``jflow-convert`` behaves the same."""
    import pathlib
    import shutil
    import sys

    bad = tmp_path / "not_a_checkpoint.pth"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    config = pathlib.Path(__file__).resolve().parents[1] / "configs" / "raft.py"
    args = [f"--config={config}", f"--torch_checkpoint={bad}", f"--output={tmp_path / 'out'}"]
    if entry == "module":
        proc = _run_cli(["-m", "jflow.convert", *args], tmp_path)
    else:
        script = shutil.which("jflow-convert", path=str(pathlib.Path(sys.executable).parent))
        assert script, "console script jflow-convert is not installed (pip install -e .)"
        proc = _run_cli([script, *args], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(bad) in lines[0], proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()


MAIN_ERRORS = {
    "missing_config_file": (["--config={configs}/nope.py"], "nope.py"),
    "unknown_field": (["--config={configs}/raft.py:smoke", "--config.model.nope=3"],
                      "--config.model.nope"),
    "bad_config_variant": (["--config={configs}/raft.py:smoke,bogus"], "bogus"),
    "bad_data_spec": (["--config={configs}/raft.py:smoke", "--config.data.train=chairz"],
                      "chairz"),
    "workdir_is_a_file": (["--config={configs}/raft.py:smoke", "--workdir={tmp}/file"],
                          "--workdir"),
    "bad_submission": (["--config={configs}/raft.py:smoke", "--config.mode=eval",
                        "--config.eval.submission=spring"], "spring"),
    "unknown_flag": (["--config={configs}/raft.py:smoke", "--nope"], "nope"),
    "bad_solver_option": (["--config={configs}/deq_raft.py:smoke",
                           "--config.deq.solver=anderson:beta=3.0,gamma=2"], "gamma"),
}


@pytest.mark.parametrize("case", sorted(MAIN_ERRORS))
def test_main_user_errors_are_one_line_before_anything_is_built(case, tmp_path):
    import pathlib

    configs = pathlib.Path(__file__).resolve().parents[1] / "configs"
    (tmp_path / "file").write_text("not a directory")
    args, named = MAIN_ERRORS[case]
    args = [a.format(configs=configs, tmp=tmp_path) for a in args]
    if not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={tmp_path / 'run'}")
    proc = _run_cli(["-m", "jflow.main", *args], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_debug_environment_variable_keeps_the_traceback(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu", JFLOW_DEBUG="1")
    proc = subprocess.run([sys.executable, "-m", "jflow.main", "--config=nope.py",
                           f"--workdir={tmp_path / 'run'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_load_config_finds_files_and_names_a_missing_one(tmp_path, monkeypatch):
    from jflow.config_files import load_config
    from jflow.errors import InputError

    monkeypatch.chdir(tmp_path)  # bare names fall back to the repository's configs/
    assert load_config("raft.py:small").model.name == "raft_small"
    assert load_config("deq_raft.py:H").model.size == "H"
    with pytest.raises(InputError, match="nope.py"):
        load_config("nope.py")


def test_benchmark_bad_size_is_one_line(tmp_path):
    import pathlib

    config = pathlib.Path(__file__).resolve().parents[1] / "configs" / "raft.py"
    for args, named in ((["--height=100", "--width=64"], "--height/--width"),
                        (["--height=64", "--width=64", "--iters=0"], "--iters")):
        proc = _run_cli(["-m", "jflow.benchmark", f"--config={config}:small", *args], tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and named in errors[0], proc.stderr[-3000:]
