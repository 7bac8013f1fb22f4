"""Data parallelism on MPI (tinydiff.distributed): two ranks train the model one process trains.

Each MPI test launches ``mpiexec -n 2 python -m tinydiff ...`` on a tiny
model and compares with one process run here: the parameters after 20
steps, a resume with the same and with another number of ranks, the samples.
Then failures: a rank killed, an exception on one rank, a NaN on one rank,
a signal to one rank; each must end the whole job, keep the last good
checkpoint and leave no process running. They are skipped where mpi4py or
mpiexec is missing (pip install -e ".[mpi]"); the test of that message is
not.
"""

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import tinydiff.train as T
from tinydiff.__main__ import main
import tinydiff.distributed as distributed
from tinydiff.distributed import Communicator

ROOT = Path(__file__).resolve().parent.parent

# An odd batch, so the two ranks' shares differ (8 and 7 rows); a flat rate large
# enough that the weights move far more than float32 round-off, so that a wrong
# gradient could not pass; 10 + 10 steps resume onto the 20 straight ones.
TINY = ["--data", "moons", "--batch-size", "15", "--width", "16", "--depth", "1", "--emb-dim", "8", "--T", "40",
        "--n-data", "256", "--warmup", "0", "--lr", "0.01", "--no-cosine", "--checkpoint-every", "10",
        "--log-every", "5", "--no-progress"]
ROUND_OFF = dict(rtol=1e-5, atol=1e-6)  # float32: the ranks add the rows' gradients in another order
INJECT = '''
import os, sys
from tinydiff.autograd import is_grad_enabled
from tinydiff.diffusion import GaussianDiffusion
import tinydiff.train.loop as loop
if os.environ["OMPI_COMM_WORLD_RANK"] == "1":
    step, loss = loop.train_step, GaussianDiffusion.training_loss
    calls = []
    def failing(run, *args, **kwargs):
        if run.step == 25:
            raise RuntimeError("injected failure")
        return step(run, *args, **kwargs)
    def poisoned(self, *args, **kwargs):
        calls.append(is_grad_enabled())
        value = loss(self, *args, **kwargs)
        return value * float("nan") if sum(calls) == 17 and calls[-1] else value
    if sys.argv[1] == "raise":
        loop.train_step = failing
    else:
        GaussianDiffusion.training_loss = poisoned
from tinydiff.cli import main
sys.exit(main(sys.argv[2:]))
'''


@pytest.fixture(scope="module")
def mpiexec():
    """The mpiexec command line (Open MPI may be asked to put 2 ranks on fewer cores); skips without MPI."""
    pytest.importorskip("mpi4py", reason='the mpi extra is not installed: pip install -e ".[mpi]"')
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not on PATH")
    version = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True).stdout
    return ["mpiexec", "-n", "2"] + (["--oversubscribe"] if "Open MPI" in version else [])


def _environment(job):
    environment = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                       OPENBLAS_NUM_THREADS="1", TINYDIFF_BACKEND="numpy", MPLBACKEND="Agg", TINYDIFF_TEST_JOB=job)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return environment


def launch(mpiexec, *args, script=None):
    """Start ``mpiexec -n 2 python -m tinydiff ARGS`` (or python SCRIPT ARGS); returns (process, job marker)."""
    job = uuid.uuid4().hex
    program = [script] if script else ["-m", "tinydiff"]
    process = subprocess.Popen([*mpiexec, sys.executable, *program, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_environment(job))
    return process, job


def run(mpiexec, *args, script=None, timeout=60):
    process, job = launch(mpiexec, *args, script=script)
    out, err = process.communicate(timeout=timeout)
    assert not ranks_alive(job), "a rank outlived mpiexec"
    return process.returncode, out, err


def ranks_of(job):
    """{rank: pid} of the live processes of the job marked ``job`` (their environment carries the marker)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"TINYDIFF_TEST_JOB={job}".encode() in environ and state != "Z":  # a zombie has ended
            rank = [v for v in environ if v.startswith(b"OMPI_COMM_WORLD_RANK=")]
            if rank:
                found[int(rank[0].split(b"=")[1])] = int(pid)
    return found


def ranks_alive(job, wait=5.0):
    """The job's ranks still running after up to ``wait`` seconds (an ending process takes a moment)."""
    deadline = time.monotonic() + wait
    while ranks_of(job) and time.monotonic() < deadline:
        time.sleep(0.05)
    return ranks_of(job)


def arrays(run_dir):
    header, saved = T.read_checkpoint(run_dir)
    return header, {name: value for name, value in saved.items() if name.split("/")[0] in ("model", "optimizer", "ema")}


@pytest.fixture(scope="module")
def runs(mpiexec, tmp_path_factory):
    """20 steps on 2 ranks, and on one process here; 10 steps on 2 ranks (to resume)."""
    folder = tmp_path_factory.mktemp("distributed")
    paths = {name: str(folder / name) for name in ("two", "one", "two_half")}
    status, _, err = run(mpiexec, "train", *TINY, "--steps", "20", "--out", paths["two"])
    assert status == 0, err
    status, _, err = run(mpiexec, "train", *TINY, "--steps", "10", "--out", paths["two_half"])
    assert status == 0, err
    assert main(["train", *TINY, "--steps", "20", "--out", paths["one"]]) == 0
    return paths


def test_two_ranks_train_the_parameters_one_process_trains(runs):
    (header_two, two), (header_one, one) = arrays(runs["two"]), arrays(runs["one"])
    assert header_two["step"] == header_one["step"] == 20 and header_two["rng_state"] == header_one["rng_state"]
    assert sorted(two) == sorted(one)
    initial = T.build_model(T.TrainConfig(**header_one["config"]), 2).state_dict()
    for name in one:
        np.testing.assert_allclose(two[name], one[name], **ROUND_OFF, err_msg=name)
    for name, value in initial.items():  # far more than round-off: a wrong gradient would show
        assert np.abs(one["model/" + name] - value).max() > 1e-3, name
    steps_two, losses_two = T.read_losses(runs["two"])
    steps_one, losses_one = T.read_losses(runs["one"])
    assert list(steps_two) == list(steps_one) == list(range(1, 21))
    np.testing.assert_allclose(losses_two, losses_one, **ROUND_OFF)  # the ranks' parts add up to the loss
    assert sorted(os.listdir(runs["two"])) == sorted(os.listdir(runs["one"]))  # rank 0 alone wrote


def test_resume_continues_on_the_same_or_another_number_of_ranks(mpiexec, runs, tmp_path):
    """The checkpoint holds the one generator state every rank shares, so any number of ranks may resume it."""
    same, fewer = str(tmp_path / "same"), str(tmp_path / "fewer")
    shutil.copytree(runs["two_half"], same)
    shutil.copytree(runs["two_half"], fewer)
    status, out, err = run(mpiexec, "train", "--data", "moons", "--resume", "--steps", "20", "--no-progress",
                           "--out", same)
    assert status == 0, err
    for name, value in arrays(runs["two"])[1].items():  # the same 2 ranks: bit for bit
        assert np.array_equal(arrays(same)[1][name], value), name
    assert main(["train", "--data", "moons", "--resume", "--steps", "20", "--no-progress", "--out", fewer]) == 0
    for name, value in arrays(runs["one"])[1].items():  # 2 ranks, then 1 process: to round-off
        np.testing.assert_allclose(arrays(fewer)[1][name], value, **ROUND_OFF, err_msg=name)


def test_two_ranks_sample_what_one_process_samples(mpiexec, runs, tmp_path, capsys):
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    sampling = ["sample", "--checkpoint", runs["one"], "--n", "37", "--sampler", "ddim", "--steps", "10", "--eta",
                "1", "--no-progress"]
    status, out, err = run(mpiexec, *sampling, "--out", two)
    assert status == 0, err
    assert out.count("drew 37 samples") == 1  # rank 0 alone speaks and writes
    assert main([*sampling, "--out", one]) == 0
    np.testing.assert_allclose(np.load(os.path.join(two, "samples.npy")), np.load(os.path.join(one, "samples.npy")),
                               **ROUND_OFF)


def _started(mpiexec, folder, *args, script=None):
    """A long run on 2 ranks, once its first checkpoint is written; returns (process, job, {rank: pid})."""
    process, job = launch(mpiexec, *args, "--steps", "100000", "--out", folder, script=script)
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(folder, "checkpoint.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = ranks_of(job)
    assert len(pids) == 2, process.communicate(timeout=30)
    return process, job, pids


def test_a_killed_rank_ends_the_job_and_leaves_the_last_checkpoint(mpiexec, tmp_path):
    folder = str(tmp_path / "run")
    process, job, pids = _started(mpiexec, folder, "train", *TINY)
    os.kill(pids[1], 9)
    process.communicate(timeout=20)
    assert process.returncode != 0
    assert not ranks_alive(job)
    assert T.load_run(folder).step % 10 == 0  # a whole checkpoint, readable


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(mpiexec, tmp_path):
    folder = str(tmp_path / "run")
    process, job, pids = _started(mpiexec, folder, "train", *TINY)
    os.kill(pids[1], 15)  # SIGTERM, as a scheduler sends it (Ctrl-C at mpiexec kills the ranks at once)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 128 + 15, err
    assert out.count("stopped by SIGTERM at step") == 1
    step = T.load_run(folder).step
    assert step > 0 and T.read_losses(folder)[0][-1] == step  # saved where every rank stopped
    assert not ranks_alive(job)


@pytest.mark.parametrize("failure,message,saved", [("raise", "rank 1 of 2: RuntimeError: injected failure", 20),
                                                   ("nan", "loss became nan at step 17", 10)])
def test_a_failure_on_one_rank_ends_every_rank_with_one_message(mpiexec, tmp_path, failure, message, saved):
    """An exception ends the job by MPI_Abort; a NaN on one rank reaches every rank through the summed gradient."""
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    folder = str(tmp_path / "run")
    status, out, err = run(mpiexec, failure, "train", *TINY, "--steps", "40", "--out", folder, script=str(script))
    assert status == 1
    assert err.count(message) == 1 and err.count("tinydiff:") == 1, err
    assert T.load_run(folder).step == saved  # the last good checkpoint, intact


def test_asking_for_ranks_without_mpi4py_exits_2_with_what_to_install(tmp_path):
    """Runs without MPI: mpi4py is made unimportable, as on a machine without the extra."""
    code = "import sys; sys.modules['mpi4py'] = None; from tinydiff.cli import main; sys.exit(main(sys.argv[1:]))"
    out = str(tmp_path / "run")
    for args, launcher in ((["--distributed"], {}), ([], {"OMPI_COMM_WORLD_SIZE": "2"})):
        environment = dict(_environment("none"), **launcher)
        done = subprocess.run([sys.executable, "-c", code, "train", *TINY, "--steps", "5", "--out", out, *args],
                              capture_output=True, text=True, env=environment, cwd=ROOT, timeout=60)
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0 and 'pip install -e ".[mpi]"' in done.stderr, done.stderr
        assert not os.path.exists(out)


def test_the_rows_of_a_batch_are_split_whole_and_in_order():
    for size in (1, 2, 3, 8):
        for n in (size, 15, 16, 37):
            parts = []
            for rank in range(size):
                communicator = Communicator.__new__(Communicator)
                communicator.rank, communicator.size = rank, size
                parts.append(communicator.rows(n))
            assert [i for part in parts for i in range(n)[part]] == list(range(n))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_an_error_travels_between_ranks_as_two_strings_never_pickled():
    """A known class comes back as itself with its message; any other as a RuntimeError that names it."""
    known = [getattr(importlib.import_module(m), n) for n, m in distributed.PROJECT_ERRORS.items()]  # public names
    for cls in known + list(distributed.BUILTIN_ERRORS.values()):
        report = distributed.error_report(cls("bad value: 'x' \u00e9"))
        assert isinstance(report, bytes) and json.loads(report) == [cls.__name__, "bad value: 'x' \u00e9"]
        back = distributed.error_from_report(report)
        assert type(back) is cls and back.args == ("bad value: 'x' \u00e9",), cls
    unknown = distributed.error_from_report(distributed.error_report(ZeroDivisionError("division by zero")))
    assert type(unknown) is RuntimeError and str(unknown) == "ZeroDivisionError: division by zero"
    assert distributed.error_report(None) == b"" and distributed.error_from_report(b"") is None
    for garbage in (b"\xff", b"{}", b'["ValueError"]', b'["ValueError", 3]', b'["__class__", "x"]'):
        assert type(distributed.error_from_report(garbage)) is RuntimeError, garbage
    assert "pickle" not in distributed.__dict__
    assert not re.search(r"^\s*(import|from)\s+c?pickle\b", Path(distributed.__file__).read_text(), re.M)
