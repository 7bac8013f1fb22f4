"""Data parallelism on MPI: one model trained by N processes, the same model one process trains.

Every rank holds the whole model and draws the same global batch of B rows
(the same indices, t and eps as one process, from the same generator
stream). Rank r computes the loss of its own rows only, as its part of the
batch's mean; the parts add up to the loss, so their gradients add up to
the gradient, and one all-reduce of the flat gradient vector gives every
rank the sum:

    L = (1/B) sum_{i=1..B} l_i = sum_r L_r,    L_r = (1/B) sum_{i in rows(r)} l_i
    grad L = sum_r grad L_r                         (one MPI_Allreduce, op=SUM)

Every rank then takes the same optimizer step from the same gradient, so
the ranks stay one model: ``Communicator.allreduce_gradients`` is the whole
of data parallelism. Sampling splits the model's rows the same way
(``shard_rows``). Launch with

    mpiexec -n 2 python -m tinydiff train --data moons

mpi4py is an optional extra (pip install -e ".[mpi]"); it is imported here
alone, and only when ``connect`` is asked for more than one process. Every
message travels through mpi4py's buffer interface (the uppercase methods):
arrays as arrays, and the few others (an error, a digest, NCCL's id) as
bytes. Nothing is pickled: what another process sends is data, never code.
With the CuPy backend each rank takes its own GPU and the sum goes through
NCCL, or CUDA-aware MPI, or host memory, in that order of preference (the
GPU path is written to CuPy's documented API but was not run on hardware
here).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback

import numpy as np

from . import backend as B
from .autograd import unwrap
from .backend import xp
from .checks import check_int

# Set by mpiexec / mpirun: Open MPI, MPICH and Intel MPI (PMI), MVAPICH.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
INSTALL_HINT = 'pip install -e ".[mpi]" (mpi4py and Open MPI)'
EXIT_FAILURE, EXIT_INTERRUPTED = 1, 130  # as the command line's: a failure, Ctrl-C (128 + SIGINT)


class MPIUnavailable(ValueError):
    """More than one process was asked for, and mpi4py cannot be imported."""


def launched_size() -> int:
    """How many processes the MPI launcher started (1 outside mpiexec), read from its environment."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def connect(asked=False):
    """A Communicator over every process of this MPI job, or None for one process.

    ``asked`` (the command line's --distributed) forces one even for a
    single process; otherwise it is made when the launcher says there are
    several. mpi4py is imported only then.
    """
    if not asked and launched_size() <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        why = "--distributed" if asked else f"running on the {launched_size()} processes mpiexec started"
        raise MPIUnavailable(f"{why} needs mpi4py, which is not installed: {INSTALL_HINT}") from None
    return Communicator(MPI.COMM_WORLD, MPI)


class Communicator:
    """The ranks of one job: which rows of a batch are this rank's, and the sums that join them."""

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.transport = {"numpy": _Transport, "cupy": _gpu_transport}.get(B.get_backend(), _HostStaged)(comm, MPI)

    def rows(self, n) -> slice:
        """This rank's contiguous rows of n: sizes differ by at most one, in rank order."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def allreduce_gradients(self, parameters):
        """grad L = sum_r grad L_r: one Allreduce(SUM) of the flat gradient, handed back to every p.grad.

        ``parameters`` is the run's optim.ParameterVector; gather_grads copies
        every p.grad into its one flat vector, the sum over ranks replaces it
        in place on every rank, and each p.grad becomes its view of the sum,
        so clipping and the optimizer see the whole batch's gradient.
        """
        grad = parameters.gather_grads()  # (P,): this rank's grad L_r
        self.transport.sum(grad)  # (P,): sum over ranks, the same on every rank
        for p, (start, stop) in zip(parameters, parameters.offsets):
            p.grad = xp.reshape(grad[start:stop], p.shape)

    def sum(self, values):
        """The elementwise sum over ranks of a host array (the ranks' parts of the logged losses)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, values, op=self.MPI.SUM)
        return values

    def maximum(self, values):
        """The elementwise maximum over ranks of a few ints (stop flags), as a list."""
        values = np.array(values, dtype=np.int64)
        self.comm.Allreduce(self.MPI.IN_PLACE, values, op=self.MPI.MAX)
        return values.tolist()

    def same(self, value) -> bool:
        """Whether every rank holds the same small value (a digest, say); the same answer on every rank."""
        return len(set(allgather_bytes(self.comm, repr(value).encode("utf-8")))) == 1

    def gather_rows(self, local, n):
        """All n rows on every rank, from each rank's own rows(n) of them (an Allgatherv)."""
        counts = [(r + 1) * n // self.size - r * n // self.size for r in range(self.size)]
        return self.transport.gather(local, counts)

    def check_batch_size(self, batch_size):
        """Every rank needs at least one row of each batch."""
        return check_int(f"batch_size (one row at least for each of the {self.size} ranks)", batch_size,
                         minimum=self.size)

    @contextlib.contextmanager
    def together(self):
        """The block ends the same way on every rank: an error on any rank is raised on all of them.

        Each rank runs the block, then one allgather of the ranks' error
        reports (``error_report``: a class name and a message, no report when
        the block succeeded) tells every rank how the others did. The block
        must hold no collective call of its own (a rank that fails early
        would skip it while the others wait in it).
        """
        error = None
        try:
            yield
        except Exception as caught:
            error = caught
        reports = allgather_bytes(self.comm, error_report(error))
        failed = [rank for rank, report in enumerate(reports) if report]
        if error is not None:
            raise raised_on_every_rank(error)
        if failed:
            raise raised_on_every_rank(_from_rank(error_from_report(reports[failed[0]]), failed[0]))

    def abort(self, error):
        """Say on this rank's stderr why it failed, then end every rank of the job (MPI_Abort)."""
        status = EXIT_INTERRUPTED if isinstance(error, KeyboardInterrupt) else EXIT_FAILURE
        where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
        text = str(error) or "interrupted"
        print(f"tinydiff: rank {self.rank} of {self.size}: {type(error).__name__}: {text}{at}; ending all "
              f"{self.size} ranks (files are written atomically: the last good ones are intact)", file=sys.__stderr__, flush=True)
        self.comm.Abort(status)


def allgather_bytes(comm, data: bytes) -> list:
    """Every rank's bytes, in rank order, on every rank: the lengths (Allgather), then the bytes (Allgatherv).

    Buffer calls of uint8 arrays, nothing pickled. When every rank sends
    nothing (b"": no error, the usual case) the lengths alone say so.
    """
    local = np.frombuffer(data, dtype=np.uint8)
    lengths = np.zeros(comm.Get_size(), dtype=np.int64)
    comm.Allgather(np.array([local.size], dtype=np.int64), lengths)
    if not lengths.any():
        return [b""] * len(lengths)
    whole = np.empty(int(lengths.sum()), dtype=np.uint8)
    comm.Allgatherv(local, [whole, lengths.tolist()])
    ends = np.cumsum(lengths).tolist()
    return [whole[end - length:end].tobytes() for length, end in zip(lengths.tolist(), ends)]


# The errors another rank's report may name, rebuilt here as themselves. The
# project's own are looked up in their packages among the modules this process
# has already imported (every rank runs the same program), never imported
# here: they live in the layers above. Any other name arrives as a
# RuntimeError whose message names it ("ZeroDivisionError: division by zero").
PROJECT_ERRORS = {
    "BackendError": "tinydiff.backend",
    "CheckFailed": "tinydiff.lesson",
    "CheckpointError": "tinydiff.train",
    "DataError": "tinydiff.data",
    "GradcheckError": "tinydiff.gradcheck",
    "MPIUnavailable": __name__,
    "RunFolderError": "tinydiff.train",
    "SamplingError": "tinydiff.samplers",
    "TrainingError": "tinydiff.train",
    "UsageError": "tinydiff.cli",
}
BUILTIN_ERRORS = {error.__name__: error for error in (
    ValueError, TypeError, KeyError, RuntimeError, MemoryError, FloatingPointError,
    OSError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)}


def error_report(error) -> bytes:
    """An error as plain data for the other ranks: UTF-8 JSON of [class name, message]; b"" for no error.

    Not pickle: unpickling what another process sent can run any code it
    names. A report is two strings, and the receiver rebuilds the error
    from a fixed list of classes (``error_from_report``).
    """
    if error is None:
        return b""
    args = error.args
    message = args[0] if len(args) == 1 and isinstance(args[0], str) else str(error)
    return json.dumps([type(error).__name__, message]).encode("utf-8")


def error_from_report(report: bytes):
    """The error an ``error_report`` describes (None for b""): a known class by name, else a RuntimeError."""
    if not report:
        return None
    try:
        fields = json.loads(report.decode("utf-8"))
    except ValueError:  # not UTF-8, or not JSON
        fields = None
    if not (isinstance(fields, list) and len(fields) == 2 and all(isinstance(f, str) for f in fields)):
        return RuntimeError(f"an unreadable error report: {report[:200]!r}")
    name, message = fields
    module = sys.modules.get(PROJECT_ERRORS.get(name, ""))  # None unless the name is on the list and imported
    known = BUILTIN_ERRORS.get(name) or (getattr(module, name, None) if module is not None else None)
    if isinstance(known, type) and issubclass(known, Exception):
        return known(message)
    return RuntimeError(f"{name}: {message}")


def _from_rank(error, rank):
    """Another rank's error, its message saying which rank (where the message is its one argument)."""
    if len(error.args) == 1 and isinstance(error.args[0], str):
        error.args = (f"on rank {rank}: {error.args[0]}",)
    return error


def raised_on_every_rank(error):
    """Mark an error that every rank raises at the same point: ``guard`` lets it end the ranks normally."""
    error.on_every_rank = True
    return error


def together(communicator):
    """communicator.together(), or nothing to agree on for one process (communicator None)."""
    return contextlib.nullcontext() if communicator is None else communicator.together()


@contextlib.contextmanager
def guard(communicator, every_rank=()):
    """At an entry point: an error on one rank ends every rank, so none waits forever in a collective.

    An error that every rank raises at the same point passes through:
    marked by ``raised_on_every_rank`` (a refusal agreed by ``together``, a
    NaN loss, which every rank sees in the summed losses) or of a type in
    ``every_rank`` (a SamplingError, when every rank holds every sample).
    Every rank then exits with the same status, and rank 0 alone says why.
    Any other error, or Ctrl-C outside the training loop, on any rank prints
    one line naming the rank and ends the whole job with MPI_Abort;
    checkpoints are written atomically, so the last good one stays intact.
    """
    if communicator is None:
        yield
        return
    try:
        yield
    except BaseException as error:
        if getattr(error, "on_every_rank", False) or isinstance(error, (SystemExit, *every_rank)):
            raise
        communicator.abort(error)


def quiet_unless_root(communicator):
    """Rank 0 alone prints (log lines, progress bars, warnings); a process setting for entry points.

    A failing rank still speaks: ``Communicator.abort`` writes to the
    process's original stderr.
    """
    if communicator is not None and communicator.rank != 0:
        sys.stdout = sys.stderr = open(os.devnull, "w")


def shard_rows(model, communicator):
    """``model`` with the rows of every call split across ranks; every rank gets all rows back.

    Sampling on N ranks: rank r evaluates the model on its rows(n) of x_t
    (and of any per-row keyword, such as class labels), and one Allgatherv
    hands every rank the whole output. Every rank then takes the same
    sampler step on all the samples, so the samplers need not know about
    ranks, and sample i is the one a single process draws. The model, nearly
    all of a step's work, is split; the sampler's elementwise update and its
    noise (drawn for all rows at once, so that sample i depends only on the
    seed and i) are done whole on every rank.
    """

    def sharded(x, t, **kwargs):
        n = x.shape[0]
        rows = communicator.rows(n)

        def mine(value):
            return value[rows, ...] if B.is_array(value) and value.ndim >= 1 and value.shape[0] == n else value

        if rows.stop > rows.start:
            local = B.asarray(unwrap(model(x[rows, ...], mine(t), **{k: mine(v) for k, v in kwargs.items()})))
        else:  # fewer rows than ranks: nothing to evaluate here
            local = xp.zeros((0,) + tuple(x.shape[1:]), dtype=x.dtype)
        return communicator.gather_rows(local, n)

    sharded.accepts_scalar_t = getattr(model, "accepts_scalar_t", False)  # t goes to the model unchanged
    sharded.data_dim = getattr(model, "data_dim", None)
    return sharded


# ---------------------------------------------------------------- how arrays travel


class _Transport:
    """Host (NumPy) arrays through MPI's buffer interface: Allreduce and Allgatherv, nothing pickled."""

    empty, contiguous = staticmethod(np.empty), staticmethod(np.ascontiguousarray)

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI

    def wait(self):
        """Let MPI read the arrays (a GPU transport waits for the device first)."""

    def sum(self, array):
        self.wait()
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def gather(self, local, counts):
        tail = tuple(local.shape[1:])
        row = int(np.prod(tail, dtype=np.int64))
        whole = self.empty((sum(counts),) + tail, dtype=local.dtype)
        self.wait()
        self.comm.Allgatherv(self.contiguous(local), [whole, [c * row for c in counts]])
        return whole


class _HostStaged(_Transport):
    """Arrays that MPI cannot read where they are (on a GPU, or array_api_strict's): copied through the host."""

    def sum(self, array):
        host = np.array(B.to_numpy(array))
        super().sum(host)
        array[...] = B.asarray(host)

    def gather(self, local, counts):
        return B.asarray(super().gather(B.to_numpy(local), counts))


class _CudaAwareMPI(_Transport):
    """GPU arrays handed to an MPI built with CUDA support (mpi4py reads __cuda_array_interface__)."""

    def __init__(self, comm, MPI):
        super().__init__(comm, MPI)
        self.empty, self.contiguous = xp.empty, xp.ascontiguousarray

    def wait(self):
        _stream().synchronize()  # MPI does not wait for CuPy's stream


class _NCCL:
    """GPU arrays summed and gathered by NCCL (CuPy's cupy.cuda.nccl), on CuPy's current stream."""

    def __init__(self, comm, nccl):
        self.nccl, self.size = nccl, comm.Get_size()
        # Rank 0's id (a tuple of small ints) reaches every rank as int64 bytes, not pickled.
        mine = np.array(nccl.get_unique_id(), dtype=np.int64).tobytes() if comm.Get_rank() == 0 else b""
        unique_id = tuple(np.frombuffer(allgather_bytes(comm, mine)[0], dtype=np.int64).tolist())
        self.comm = nccl.NcclCommunicator(self.size, unique_id, comm.Get_rank())

    def _type(self, array):
        return {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64}[str(array.dtype)]

    def sum(self, array):
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._type(array), self.nccl.NCCL_SUM,
                            _stream().ptr)

    def gather(self, local, counts):
        """NCCL's allGather takes equal parts: each rank's rows padded to the largest part, then cut out."""
        most, tail = max(counts), tuple(local.shape[1:])
        padded = xp.zeros((most,) + tail, dtype=local.dtype)
        padded[: local.shape[0], ...] = local
        parts = xp.empty((self.size, most) + tail, dtype=local.dtype)
        self.comm.allGather(padded.data.ptr, parts.data.ptr, padded.size, self._type(padded),
                            _stream().ptr)
        return xp.concat([parts[r, :count, ...] for r, count in enumerate(counts)], axis=0)


def _gpu_transport(comm, MPI):
    """Each rank on its own GPU (its rank on this node modulo the visible devices), and how arrays travel."""
    import cupy

    local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    cupy.cuda.Device(local_rank % cupy.cuda.runtime.getDeviceCount()).use()
    from cupy.cuda import nccl

    if nccl.available:
        return _NCCL(comm, nccl)
    if _mpi_is_cuda_aware(MPI):
        return _CudaAwareMPI(comm, MPI)
    return _HostStaged(comm, MPI)


def _stream():
    """CuPy's current stream, on which the step's kernels run (NCCL queues its work there too)."""
    import cupy

    return cupy.cuda.get_current_stream()


def _mpi_is_cuda_aware(MPI) -> bool:
    """Open MPI's MPIX_Query_cuda_support() where the library has it; False anywhere else."""
    import ctypes

    try:
        return bool(ctypes.CDLL(MPI.__file__).MPIX_Query_cuda_support())
    except (OSError, AttributeError):
        return False
