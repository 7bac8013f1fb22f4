"""Robustness: nothing is lost, nothing is silent.

A run folder is locked against a second training process, checked for
writability before any step is trained, and written atomically with the
umask's permissions; a checkpoint is never written with non-finite weights;
a refused run leaves no folder; SIGTERM saves; sizes are checked before
anything is allocated (from flags and from a checkpoint's header); samplers
refuse NaN results; a bad TINYDIFF_BACKEND is one line; gradcheck refuses
non-finite gradients; the Python API refuses inputs it would misread.

CLI cases run in-process through tinydiff.cli.main (exit status, one line on
stderr); subprocesses only where a second process or a signal is the point.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from tinydiff import backend as B
from tinydiff import nn, optim, samplers
from tinydiff import train as T
from tinydiff.autograd import Tensor
from tinydiff.cli import main
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.schedules import make_schedule

TINY = ["--steps", "20", "--batch-size", "16", "--width", "16", "--depth", "1", "--emb-dim", "8", "--T", "40",
        "--n-data", "256", "--checkpoint-every", "10", "--no-progress"]
LOCK = ".tinydiff.lock"  # tinydiff.train.folder.LOCK_NAME
QUIET = dict(progress=False, log=lambda *_: None)
ENV = {**os.environ, "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}
ENV.pop("PYTHONWARNINGS", None)  # what a user's shell shows, warnings included
posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes, signals and file modes")


def tiny_config(**overrides):
    values = dict(data="moons", steps=20, batch_size=16, width=16, depth=1, emb_dim=8, T=40, n_data=256,
                  checkpoint_every=10, log_every=5, seed=0)
    values.update(overrides)
    return T.TrainConfig(**values)


def cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err):
    """The one line a refused command prints on stderr (no traceback, nothing else)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def training_steps(monkeypatch):
    """Count the training steps taken (a checkpoint's probe runs without a graph and is not counted)."""
    from tinydiff.autograd import is_grad_enabled

    original, calls = GaussianDiffusion.training_loss, {"n": 0}

    def counted(self, *args, **kwargs):
        calls["n"] += is_grad_enabled()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GaussianDiffusion, "training_loss", counted)
    return calls


def snapshot(folder, names=("checkpoint.npz", "config.json", "losses.csv")):
    return {name: (open(os.path.join(folder, name), "rb").read(), os.stat(os.path.join(folder, name)).st_mtime_ns)
            for name in names}


# ---------------------------------------------------------------- 1. one training process per run folder

LOCK_HOLDER = ("import sys, time\n"
               "from tinydiff.train.folder import RunLock\n"
               "RunLock(sys.argv[1], log=lambda *_: None).acquire()\n"
               "print('locked', flush=True)\n"
               "time.sleep(60)\n")


@posix
def test_a_second_training_process_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    from tinydiff.train.folder import RunLock

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert (out / LOCK).read_text().strip() == str(holder.pid)
        with pytest.raises(T.RunFolderError, match=f"in use by another training process \\(pid {holder.pid}\\)"):
            RunLock(out, log=lambda *_: None).acquire()
        with pytest.raises(T.RunFolderError, match="in use by another training process"):
            T.train(tiny_config(), out, **QUIET)
        code, _, err = cli(["train", "--data", "moons", "--out", out, *TINY], capsys)
        assert code == 1 and "in use by another training process" in one_line(err)
        assert sorted(os.listdir(out)) == [LOCK]  # nothing was trained or written
    finally:
        holder.kill()  # a kill -9: the lock file stays behind, and is now stale
        holder.wait()
    assert (out / LOCK).read_text().strip() == str(holder.pid)
    messages = []
    result = T.train(tiny_config(), out, progress=False, log=messages.append)
    assert result.run.step == 20
    assert any("taking over a stale lock" in m and str(holder.pid) in m for m in messages), messages
    assert (out / LOCK).read_text() == ""  # released at the end: no owner (the file stays, see RunLock)


@posix
def test_a_held_lock_refuses_the_cli_resume_and_a_pid_that_does_not_hold_it_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", "--data", "moons", "--out", out, *TINY], capsys)[0] == 0
    before = snapshot(out)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = cli(["train", "--data", "moons", "--out", out, "--resume", "--steps", "30", "--no-progress"],
                           capsys)
        assert code == 1
        line = one_line(err)
        assert "in use by another training process" in line and f"pid {holder.pid}" in line
        assert snapshot(out) == before  # the run is untouched
    finally:
        holder.kill()
        holder.wait()
    sleeper = subprocess.Popen(["sleep", "30"])  # a live process whose pid is in the file but holds no lock
    try:
        (out / LOCK).write_text(str(sleeper.pid))  # (a reused pid, say): the OS lock decides, not the pid
        code, text, err = cli(["train", "--data", "moons", "--out", out, "--resume", "--steps", "30",
                               "--no-progress"], capsys)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert code == 0, err
    assert f"taking over a stale lock in {out} (pid {sleeper.pid} no longer holds it)" in text
    assert T.load_run(out).step == 30 and (out / LOCK).read_text() == ""


def test_the_run_lock_holds_this_pid_and_release_empties_it(tmp_path):
    from tinydiff.train.folder import RunLock

    with RunLock(tmp_path, log=lambda *_: None):
        assert (tmp_path / LOCK).read_text() == str(os.getpid())
    assert (tmp_path / LOCK).read_text() == ""
    messages = []
    with RunLock(tmp_path, log=messages.append):  # taken again at once, and without a stale-lock message
        pass
    assert messages == []


@posix
def test_a_refused_second_process_leaves_the_owners_files_in_flight_alone(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    in_flight = out / ".checkpoint.npz.k3j2h1.part"  # atomic_write's temporary name for checkpoint.npz
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        in_flight.write_bytes(b"the owner is writing this")
        with pytest.raises(T.RunFolderError, match="in use by another training process"):
            T.train(tiny_config(), out, **QUIET)
        assert in_flight.exists(), "the owner's checkpoint in flight was deleted by the refused process"
    finally:
        holder.kill()
        holder.wait()


RACER = ("import sys, time\n"
         "from tinydiff.train import RunFolderError\n"
         "from tinydiff.train.folder import RunLock\n"
         "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"  # all start at the same moment
         "try:\n"
         "    RunLock(sys.argv[1], log=lambda *_: None).acquire()\n"
         "    print('got', flush=True)\n"
         "    time.sleep(3)\n"
         "except RunFolderError:\n"
         "    print('refused', flush=True)\n")


@posix
def test_processes_racing_for_a_stale_lock_leave_exactly_one_owner(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / LOCK).write_text(str(dead.pid))  # a stale lock, as kill -9 leaves one
    start = time.time() + 4.0  # (time for four interpreters to start, even on a busy machine)
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(start)], stdout=subprocess.PIPE,
                               text=True, env=ENV) for _ in range(4)]
    answers = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert answers == ["got", "refused", "refused", "refused"], answers


# ---------------------------------------------------------------- 2. an unwritable run folder fails before step 1


@pytest.fixture
def unwritable(monkeypatch):
    """Make folders under a given path refuse new files (root ignores chmod, so refuse at mkstemp)."""
    blocked = []
    original = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        folder = os.path.abspath(kwargs.get("dir") or (args[2] if len(args) > 2 else "."))
        if any(folder == b or folder.startswith(b + os.sep) for b in blocked):
            raise PermissionError(13, "Permission denied", folder)
        return original(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return lambda path: blocked.append(os.path.abspath(path))


def test_an_unwritable_new_run_folder_fails_before_any_step(tmp_path, monkeypatch, unwritable, capsys):
    out = tmp_path / "run"
    out.mkdir()
    unwritable(out)
    steps = training_steps(monkeypatch)
    with pytest.raises(T.RunFolderError, match="cannot write in the run folder"):
        T.train(tiny_config(), out, **QUIET)
    assert steps["n"] == 0 and os.listdir(out) == []
    code, _, err = cli(["train", "--data", "moons", "--out", out, *TINY], capsys)
    assert code == 1 and "cannot write in the run folder" in one_line(err) and "Permission denied" in err
    assert steps["n"] == 0 and os.listdir(out) == []


def test_an_unwritable_run_folder_on_resume_leaves_the_run_untouched(tmp_path, monkeypatch, unwritable, capsys):
    out = tmp_path / "run"
    T.train(tiny_config(), out, **QUIET)
    before = snapshot(out)
    unwritable(out)
    steps = training_steps(monkeypatch)
    with pytest.raises(T.RunFolderError, match="cannot write in the run folder"):
        T.train(tiny_config(), out, resume=True, overrides={"steps": 40}, **QUIET)
    code, _, err = cli(["train", "--data", "moons", "--out", out, "--resume", "--steps", "40", "--no-progress"], capsys)
    assert code == 1 and "cannot write in the run folder" in one_line(err)
    assert steps["n"] == 0
    assert snapshot(out) == before  # config.json, losses.csv and checkpoint.npz: same bytes, same mtime
    assert sorted(os.listdir(out)) == [LOCK, "checkpoint.npz", "config.json", "losses.csv"]  # (the lock: released)


# ---------------------------------------------------------------- 3. atomic files: losses.csv, modes, stale parts


def test_resume_keeps_loss_rows_up_to_the_checkpoint_and_a_torn_row_is_skipped(tmp_path):
    out = tmp_path / "run"
    T.train(tiny_config(), out, **QUIET)  # rows 1..20, checkpoint at 20
    with open(out / "losses.csv", "a") as file:  # a killed process logged past its checkpoint, then tore a row
        file.write("".join(f"{step},99.0,0.001\n" for step in range(21, 25)) + "25,0.1")
    steps, losses = T.read_losses(out)
    assert list(steps) == list(range(1, 25))  # the torn "25,0.1" is skipped
    T.train(tiny_config(), out, resume=True, overrides={"steps": 30}, **QUIET)
    steps, losses = T.read_losses(out)
    assert list(steps) == list(range(1, 31))  # every step once
    assert 99.0 not in losses and np.all(np.isfinite(losses))  # rows past the checkpoint were replaced


@posix
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_run_files_get_the_umasks_mode(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        T.train(tiny_config(), tmp_path / "run", **QUIET)
    finally:
        os.umask(previous)
    for name in ("config.json", "losses.csv", "checkpoint.npz"):
        assert oct(os.stat(tmp_path / "run" / name).st_mode & 0o777) == oct(mode), name


def test_stale_part_files_are_removed_on_resume(tmp_path):
    out = tmp_path / "run"
    T.train(tiny_config(), out, **QUIET)
    stale = [".checkpoint.npz.a1b2c3.part", ".losses.csv.x9y8.part"]  # left by a kill -9 mid-write
    for name in stale:
        (out / name).write_bytes(b"half a file")
    (out / "notes.part").write_text("a user's file, not a hidden temporary")
    T.train(tiny_config(), out, resume=True, overrides={"steps": 30}, **QUIET)
    assert not [name for name in stale if (out / name).exists()]
    assert (out / "notes.part").exists()
    assert T.load_run(out).step == 30


# ---------------------------------------------------------------- 4. SIGTERM saves and exits 143


@posix
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    out = tmp_path / "run"
    args = list(TINY)
    args[args.index("--steps") + 1] = "100000"
    process = subprocess.Popen([sys.executable, "-m", "tinydiff", "train", "--data", "moons", *args, "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.npz").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, stderr
    assert "stopped by SIGTERM" in stdout and "Traceback" not in stderr
    run = T.load_run(out)
    assert 0 < run.step < 100000 and np.all(np.isfinite(B.to_numpy(run.parameters.data)))
    assert (out / LOCK).read_text() == ""  # the lock was released


# ---------------------------------------------------------------- 5. non-finite weights are never saved


def poison_adam_at(monkeypatch, step):
    """Make the parameters NaN right after the optimizer's update number ``step`` (once)."""
    original, done = optim.Adam.step, {"flag": False}

    def step_then_poison(self):
        original(self)
        if self.step_count == step and not done["flag"]:
            done["flag"] = True
            first = next(iter(self.params))
            first.data[...] = float("nan")

    monkeypatch.setattr(optim.Adam, "step", step_then_poison)


def test_non_finite_weights_are_not_saved_and_resume_can_lower_the_lr(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    poison_adam_at(monkeypatch, 20)  # the weights of step 20, the second checkpoint, are NaN
    with pytest.raises(T.TrainingError) as error:
        T.train(tiny_config(steps=30), out, **QUIET)
    message = str(error.value)
    assert "step 20 are not finite" in message and "checkpoint.npz (step 10)" in message
    header, arrays = T.read_checkpoint(out)
    assert header["step"] == 10
    assert all(np.all(np.isfinite(value)) for name, value in arrays.items() if name.startswith(("model/", "ema/")))
    assert (out / LOCK).read_text() == ""  # the lock was released
    code, text, err = cli(["train", "--data", "moons", "--out", out, "--resume", "--lr", "0.0001", "--no-progress"],
                          capsys)
    assert code == 0, err
    assert "lr changes from 0.003 to 0.0001" in text  # from the 2D default
    assert json.loads((out / "config.json").read_text())["lr"] == 0.0001
    run = T.load_run(out)
    assert run.step == 30 and run.config.lr == 0.0001


# ---------------------------------------------------------------- 6. a refused new run leaves no folder


@pytest.mark.parametrize("args,needle", [
    (["--data", "swissroll", "--conditional"], "needs labels"),
    (["--data", "moons", "--width", "100000000"], "GB"),
    (["--data", "moons", "--superres", "2"], "is a 2D set"),
])
def test_a_refused_new_run_leaves_no_folder_behind(args, needle, tmp_path, capsys):
    out = tmp_path / "parent" / "run"
    code, _, err = cli(["train", *TINY, *args, "--out", out], capsys)
    assert code == 2 and needle in one_line(err)
    assert not out.exists() and not (tmp_path / "parent").exists()


# ---------------------------------------------------------------- 7. samplers refuse NaN


def nan_model(x, t, **kwargs):
    return B.asarray(np.full(tuple(x.shape), np.nan, dtype=np.float32))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "inpaint"])
def test_samplers_refuse_nan_results(sampler):
    diffusion = GaussianDiffusion(make_schedule("linear", 40))
    rng = B.default_rng(0)
    with pytest.raises(samplers.SamplingError, match=f"{sampler}: 8 of 8 sample values are NaN or inf"):
        if sampler == "ddpm":
            samplers.ddpm(nan_model, diffusion, (4, 2), rng)
        elif sampler == "ddim":
            samplers.ddim(nan_model, diffusion, (4, 2), rng, steps=5)
        else:
            samplers.inpaint(nan_model, diffusion, np.zeros((4, 2), np.float32), np.array([1.0, 0.0]), rng)


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conditional") / "run"
    T.train(tiny_config(data="eightgaussians", conditional=True), out, **QUIET)
    return out


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings on the way to inf
def test_sample_with_a_huge_guidance_fails_and_writes_nothing(conditional_run, tmp_path, capsys):
    out = tmp_path / "samples"
    code, _, err = cli(["sample", "--checkpoint", conditional_run, "--class", "0", "--guidance", "1e30", "--n", "8",
                        "--no-progress", "--out", out], capsys)
    assert code == 1
    line = one_line(err)
    assert line.startswith("tinydiff: sampling failed:") and "NaN or inf" in line
    assert not (out / "samples.npy").exists() and not (out / "samples.png").exists()


def test_sample_with_a_huge_guidance_is_one_line_in_a_real_process(conditional_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tinydiff", "sample", "--checkpoint", str(conditional_run), "--class",
                             "0", "--guidance", "1e30", "--n", "8", "--no-progress", "--out", str(tmp_path / "s")],
                            capture_output=True, text=True, env=ENV, timeout=60)
    assert result.returncode == 1
    assert one_line(result.stderr).startswith("tinydiff: sampling failed:")


def test_eps_prediction_is_refused_on_a_zero_terminal_snr_schedule():
    schedule = make_schedule("linear", 100, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="zero-terminal-SNR") as error:
        GaussianDiffusion(schedule, prediction_type="eps")
    assert "'v'" in str(error.value) and "'x0'" in str(error.value)
    for prediction in ("v", "x0"):
        GaussianDiffusion(schedule, prediction_type=prediction)  # the ones that work


# ---------------------------------------------------------------- 8. sizes before allocation


@pytest.mark.parametrize("flag,value", [("--width", "100000000"), ("--batch-size", "10000000000"),
                                        ("--T", "10000000000"), ("--n-data", "100000000000")])
def test_sizes_beyond_the_machine_are_refused_before_allocation(flag, value, tmp_path, monkeypatch, capsys):
    from tinydiff import checks

    monkeypatch.setattr(checks, "physical_memory", lambda: 16 * 2**30)  # the same answer on every machine
    args = list(TINY)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    start = time.perf_counter()
    code, _, err = cli(["train", "--data", "moons", *args, "--out", tmp_path / "run"], capsys)
    assert code == 2
    line = one_line(err)
    assert "GB" in line and "more than this machine's 16.0 GB" in line
    assert time.perf_counter() - start < 5 and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "run"
    T.train(tiny_config(steps=10), out, **QUIET)
    return out / "checkpoint.npz"


def crafted(good, path, change):
    """A copy of a real checkpoint with its JSON header changed, written as tinydiff writes one."""
    with np.load(good, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


HEADER_CASES = {
    "width": (lambda h: h["config"].update(width=10**6), "the header describes a model of"),
    "step-negative": (lambda h: h.update(step=-1), "header field 'step'"),
    "step-text": (lambda h: h.update(step="abc"), "header field 'step'"),
    "image_shape": (lambda h: h.update(image_shape=[1000, 1000]), "header field 'image_shape'"),
    "config-list": (lambda h: h.update(config=[1, 2, 3]), "header field 'config'"),
}


@pytest.mark.parametrize("case", HEADER_CASES)
def test_a_crafted_checkpoint_header_is_refused_by_field(case, good_checkpoint, tmp_path, monkeypatch, capsys):
    change, needle = HEADER_CASES[case]
    path = crafted(good_checkpoint, tmp_path / f"{case}.npz", change)
    built = []
    monkeypatch.setattr(nn.MLPDenoiser, "__init__", lambda self, *a, **k: built.append(1) or None)
    with pytest.raises(T.CheckpointError) as error:
        T.load_run(path)
    assert str(path) in str(error.value) and needle in str(error.value)
    if case == "width":
        assert "13,000,002 parameters" in str(error.value)  # 10 x 10^6 + 10^6 + 2 x 10^6 + 2, counted, not built
    assert built == []  # refused before any model is built
    code, _, err = cli(["sample", "--checkpoint", path, "--n", "4", "--no-progress", "--out", tmp_path / "s"], capsys)
    assert code == 1
    line = one_line(err)
    assert str(path) in line and needle in line
    assert not (tmp_path / "s" / "samples.npy").exists()


# ---------------------------------------------------------------- 9. a bad TINYDIFF_BACKEND


def test_a_bad_tinydiff_backend_is_one_line_and_does_not_break_import(tmp_path):
    env = {**ENV, "TINYDIFF_BACKEND": "bogus"}
    imported = subprocess.run([sys.executable, "-c", "import tinydiff, tinydiff.train; print('imported')"],
                              capture_output=True, text=True, env=env, timeout=60)
    assert imported.returncode == 0 and "imported" in imported.stdout, imported.stderr
    result = subprocess.run([sys.executable, "-m", "tinydiff", "train", "--data", "moons", *TINY,
                             "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "TINYDIFF_BACKEND" in line and "bogus" in line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 11. gradcheck refuses non-finite gradients


def _nan_vjp(a):
    from tinydiff.autograd import record

    return record(a.data * 1.0, (a,), lambda g: (g * float("nan"),), "nan_vjp")


def _nan_off_the_point(a):
    """The identity at 1 and below, NaN just above: its VJP is finite, its difference quotient is not."""
    from tinydiff.autograd import record

    data = a.data
    return record(B.xp.where(data > 1.0, B.xp.asarray(float("nan"), dtype=data.dtype), data), (a,),
                  lambda g: (g,), "nan_above_one")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name,fn,point,which", [
    ("sqrt(x*x) at 0", lambda x: (x * x) ** 0.5, 0.0, "analytical"),
    ("a VJP that returns NaN", _nan_vjp, 0.5, "analytical"),
    ("NaN a step away", _nan_off_the_point, 1.0, "numerical"),
], ids=["sqrt-of-square-at-0", "nan-vjp", "nan-a-step-away"])
def test_gradcheck_refuses_non_finite_gradients(name, fn, point, which):
    from tinydiff.gradcheck import GradcheckError, gradcheck

    x = Tensor(B.asarray(np.full(3, point)))
    with pytest.raises(GradcheckError, match=f"the {which} gradient of input 0 is not finite"):
        gradcheck(fn, [x])


# ---------------------------------------------------------------- 12. the Python API refuses what it would misread


@pytest.mark.parametrize("make", [
    lambda: Tensor("abc"),
    lambda: Tensor(None),
    lambda: Tensor(np.array([object()])),
    lambda: Tensor(np.arange(3), requires_grad=True),
    lambda: nn.Parameter(np.arange(3)),
], ids=["string", "None", "object-array", "int-requires-grad", "int-parameter"])
def test_tensor_refuses_non_numbers_and_gradients_of_integers(make):
    with pytest.raises(TypeError, match="Tensor: "):
        make()


def tiny_denoiser(num_classes=None):
    return nn.MLPDenoiser(data_dim=2, width=8, depth=1, emb_dim=8, num_timesteps=40, num_classes=num_classes,
                          rng=B.default_rng(0))


def test_samplers_refuse_a_missing_rng_and_a_shape_the_model_cannot_denoise():
    model, diffusion = tiny_denoiser(), GaussianDiffusion(make_schedule("linear", 40))
    with pytest.raises(ValueError, match="default_rng"):
        samplers.ddpm(model, diffusion, (4, 2), rng=None)
    with pytest.raises(ValueError, match=r"use shape \(N, 2\)"):
        samplers.ddpm(model, diffusion, (4, 3), B.default_rng(0))
    with pytest.raises(ValueError, match=r"use shape \(N, 2\)"):
        samplers.ddim(model, diffusion, (4, 3), B.default_rng(0), steps=5)


def test_labels_for_an_unconditional_model_and_classes_out_of_range_are_refused():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="built without num_classes"):
        tiny_denoiser()(x, 3, y=np.zeros(4, np.int64))
    conditional = tiny_denoiser(num_classes=10)
    with pytest.raises(ValueError, match=r"class labels must be in 0\.\.9"):
        conditional(x, 3, y=np.full(4, 12))
    with pytest.raises(ValueError, match=r"class labels must be in 0\.\.9"):
        conditional(x, 3, y=np.full(4, -1))
    conditional(x, 3, y=np.full(4, 10))  # 10 is the null class: allowed


def test_a_scalar_class_out_of_range_is_a_value_error():
    model = tiny_denoiser(num_classes=10)
    with pytest.raises(ValueError, match="12"):
        model(np.zeros((4, 2), np.float32), 3, y=12)
    assert model(np.zeros((4, 2), np.float32), 3, y=3).shape == (4, 2)  # one label for every row
