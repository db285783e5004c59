"""Where training work runs: in this process, or as tasks on a Ray cluster (local or remote).

The pipeline hands an executor independent units of work (autotune evaluations, subband and DNN fits) and
consumes results as they finish; what runs where never changes what is computed. Ray is optional
(``pip install 'speechkern[distributed]'``); tasks declare the GPUs they need so Ray places them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from speechkern.errors import SpeechkernError

logger = logging.getLogger(__name__)

Call = tuple[tuple, dict]


class SerialExecutor:
    """Runs every task here, one after the other, in submission order."""

    name = "serial"

    def share(self, obj: Any) -> Any:
        """Make a large argument available to tasks (here: the object itself)."""
        return obj

    def run(self, fn: Callable, calls: Sequence[Call], gpus: float = 0.0) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(*args, **kwargs))`` for each call."""
        for index, (args, kwargs) in enumerate(calls):
            yield index, fn(*args, **kwargs)

    def close(self) -> None:
        pass


PROBE_SECONDS = 5.0  # how long a cluster's head may take to accept a connection


def check_reachable(address: str) -> None:
    """Refuse a Ray ``address`` of the form HOST:PORT where nothing accepts a connection within
    :data:`PROBE_SECONDS` (a typo, or a head node not started): ``ray.init`` retried it for more than five minutes,
    printing Ray's own log lines. Other forms (``auto``, ``ray://...``) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not host or "://" in address or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS):
            pass
    except (OSError, ValueError, OverflowError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise SpeechkernError(f"Ray cluster at {address!r}: nothing answers there ({reason}); start the cluster's "
                              "head node first, or check ray_address") from None  # fmt: skip


class RayExecutor:
    """Runs tasks on Ray: a local instance with ``workers`` CPUs (0 = all), or the cluster at ``address``.

    Each task takes one CPU and ``gpus`` GPUs. Large arrays are put in Ray's object store once (:meth:`share`)
    and passed to tasks by reference. Results arrive in completion order.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int = 0, gpus_per_task: float = 0.0) -> None:
        try:
            import ray
        except ImportError:
            raise SpeechkernError(
                "distributed training needs Ray: pip install 'speechkern[distributed]' (or ./install.sh with "
                "EXTRAS=dev,distributed)"
            ) from None
        self.ray = ray
        self.gpus_per_task = gpus_per_task
        self.started_here = not ray.is_initialized()
        if self.started_here:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                check_reachable(address)  # Ray itself retried an address where nothing answers for minutes
                options["address"] = address
            elif workers:
                options["num_cpus"] = workers
            try:
                ray.init(**options)
            except ConnectionError as err:
                where = f"Ray cluster at {address!r}" if address else "a local Ray instance"
                raise SpeechkernError(f"{where}: cannot connect ({err}); check ray_address") from None
        resources = ray.cluster_resources()
        logger.info("Ray: %s CPUs, %s GPUs", resources.get("CPU", 0), resources.get("GPU", 0))

    def share(self, obj: Any) -> Any:
        return self.ray.put(obj)

    def run(self, fn: Callable, calls: Sequence[Call], gpus: float | None = None) -> Iterator[tuple[int, Any]]:
        """Submit every call now (the caller may do other work, even run more tasks, before it reads the
        results) and yield ``(index, result)`` as each finishes; closing the iterator cancels the unfinished."""
        remote = self.ray.remote(num_cpus=1, num_gpus=self.gpus_per_task if gpus is None else gpus)(fn)
        results = self._results({remote.remote(*args, **kwargs): i for i, (args, kwargs) in enumerate(calls)})
        next(results)  # enter its try block, so that closing it before the first result still cancels the tasks
        return results

    def _results(self, pending: dict) -> Iterator[tuple[int, Any]]:
        try:
            yield None
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                try:
                    result = self.ray.get(done[0])
                except self.ray.exceptions.RayTaskError as err:  # its text carries the remote traceback
                    if isinstance(err.cause, SpeechkernError):  # a user's error: its one line, as when run here
                        raise err.cause.with_traceback(None) from None
                    raise
                yield index, result
        finally:
            for ref in pending:  # interrupted: do not leave work running on the cluster
                self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(ray: bool = False, address: str | None = None, workers: int = 0, gpus_per_task: float = 0.0):
    """A :class:`RayExecutor` when asked for (``ray`` or an ``address``), else a :class:`SerialExecutor`."""
    if ray or address:
        return RayExecutor(address=address, workers=workers, gpus_per_task=gpus_per_task)
    return SerialExecutor()


def process_pool(n_jobs: int):
    """A joblib ``Parallel`` of ``n_jobs`` loky worker processes yielding results in order (``return_as=
    "generator"``), whose workers start with SIGINT blocked, as loky starts its resource tracker: Ctrl-C reaches
    the whole process group, and workers caught importing or computing printed a KeyboardInterrupt traceback each
    beside the command's one line. This process handles the interrupt and stops them."""
    from joblib import Parallel

    _block_sigint_in_new_workers()
    return Parallel(n_jobs=n_jobs, backend="loky", return_as="generator")


def _block_sigint_in_new_workers() -> None:
    import signal

    try:  # loky's private spawner, imported at each worker's start (joblib 1.6); without it the tracebacks stay
        from joblib.externals.loky.backend import fork_exec as module
    except ImportError:
        return
    if not callable(getattr(module, "fork_exec", None)) or not hasattr(signal, "pthread_sigmask"):
        return
    if getattr(module.fork_exec, "_sigint_blocked", False):
        return
    original = module.fork_exec

    def fork_exec(*args, **kwargs):
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # the child inherits the mask
        try:
            return original(*args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)

    fork_exec._sigint_blocked = True  # type: ignore[attr-defined]
    module.fork_exec = fork_exec
