"""Dask distributed clients for featpipe: connect to a cluster or start a local one.

featpipe never schedules work itself across machines; it hands tasks to Dask
distributed, which users already run on laptops, HPC queues (dask-jobqueue),
Kubernetes, or one worker per GPU (dask_cuda.LocalCUDACluster). This module
gives the rest of featpipe one way in::

    with dask_client(scheduler="tcp://10.0.0.5:8786") as client:
        ...
    with dask_client(workers=4) as client:      # a LocalCluster on 127.0.0.1
        ...

Either way the workers are checked before any work is sent: each must import
featpipe, at this process's version, and run the same Keras backend, since a
worker with other code computes other numbers.
"""

import concurrent.futures
import contextlib
import json
import logging
import os
import sys

from plumbing.backend import keras_home
from plumbing.errors import FeatpipeError
from plumbing.versions import featpipe_version

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
WORKER_WAIT_S = 10


@contextlib.contextmanager
def dask_client(scheduler=None, workers=None, *, threads_per_worker=None, connect_timeout=None):
    """Yield a checked ``distributed.Client``; close it (and any cluster started here) on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://host:8786``.
    workers : int, optional
        Without ``scheduler``: start a ``LocalCluster`` of this many worker
        processes on 127.0.0.1 (one when neither is given).
    threads_per_worker : int, optional
        Local cluster only; default: this machine's cores shared out evenly.
    connect_timeout : float, optional
        Seconds to wait for ``scheduler`` before giving up with a FeatpipeError
        (default :data:`CONNECT_TIMEOUT_S`).

    Raises
    ------
    FeatpipeError
        The scheduler is unreachable, has no workers, or a worker lacks
        featpipe or runs another version of it.
    """
    if scheduler and workers:
        raise FeatpipeError(
            f"give a scheduler address or a number of local workers, not both (got scheduler={scheduler!r}, workers={workers})"
        )
    connect_timeout = CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout
    with contextlib.ExitStack() as stack:
        if scheduler:
            check_scheduler(scheduler, connect_timeout)
            client = stack.enter_context(_connect(scheduler, connect_timeout))
            _wait_for_workers(client, scheduler)
        else:
            cluster = stack.enter_context(_local_cluster(workers or 1, threads_per_worker))
            client = stack.enter_context(_connect(cluster, connect_timeout))
        check_workers(client)
        yield client


def dashboard_link(client):
    """The dashboard's URL with a hint when it can't show anything, or ``None`` without one."""
    link = client.dashboard_link if "dashboard" in client.scheduler_info().get("services", {}) else None
    if link:
        try:
            # A lambda travels by value: the scheduler needn't have featpipe installed.
            has_bokeh = client.run_on_scheduler(lambda: __import__("importlib.util").util.find_spec("bokeh") is not None)
        except Exception:  # a scheduler that refuses pickled functions: say nothing more
            has_bokeh = True
        if not has_bokeh:
            link += " (shows nothing until bokeh is installed beside the scheduler: pip install bokeh)"
    return link


def check_scheduler(address, timeout):
    """Refuse an address that is malformed or where no Dask scheduler answers within ``timeout`` s.

    The address is parsed before anything connects, and a probe connection
    must finish Dask's handshake in time: a port where something else listens
    (a web server, say) would otherwise keep the client waiting for ever.
    """
    import asyncio

    from distributed.comm import connect, parse_address
    from distributed.comm.addressing import parse_host_port
    from distributed.comm.registry import backends

    scheme, location = parse_address(str(address), strict=False)
    if scheme not in backends:
        raise FeatpipeError(f"cannot reach the Dask scheduler at {address}: unknown address scheme {scheme!r}")
    try:
        host, _ = parse_host_port(location) if scheme in ("tcp", "tls") else (location, None)
    except ValueError:
        host = None
    if not host:
        raise FeatpipeError(f"cannot reach the Dask scheduler at {address}: expected an address like tcp://host:8786")

    async def handshake():
        comm = await connect(address, timeout=timeout)
        await comm.close()

    # A thread of its own: the caller may be inside an event loop already (a notebook).
    with concurrent.futures.ThreadPoolExecutor(1) as probe:
        try:
            probe.submit(asyncio.run, asyncio.wait_for(handshake(), timeout)).result()
        except (OSError, asyncio.TimeoutError, TimeoutError, ValueError):
            raise _unreachable(address, timeout) from None


def _unreachable(address, timeout):
    return FeatpipeError(
        f"cannot reach the Dask scheduler at {address}: no answer within {timeout:g} s "
        "(is `dask scheduler` running there, and reachable from here?)"
    )


def _connect(address_or_cluster, timeout):
    from distributed import Client

    try:
        return Client(address_or_cluster, timeout=timeout, set_as_default=False)
    except OSError:
        raise _unreachable(address_or_cluster, timeout) from None
    except (ValueError, TypeError) as error:  # a malformed address
        raise FeatpipeError(f"cannot reach the Dask scheduler at {address_or_cluster}: {error}") from None


def _local_cluster(workers, threads_per_worker):
    from distributed import LocalCluster

    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    log.info("starting a local Dask cluster: %d worker(s) x %d thread(s)", workers, threads)
    # ":0" picks a free port: 8787 may belong to a cluster the user already runs.
    return LocalCluster(
        n_workers=workers, threads_per_worker=threads, processes=True, host="127.0.0.1", dashboard_address=":0",
        env=shared_accelerator_environment(),
    )


# Each backend's switch from "take (most of) the GPU's memory at start" to "take what is used".
ON_DEMAND_GPU_MEMORY = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}


def shared_accelerator_environment():
    """Environment variables for local workers that share this machine's GPU.

    JAX takes 75% of a GPU's memory when a process first uses it, TensorFlow
    nearly all of it: the second worker (or this process) would find none
    left. Each worker takes what it uses instead. A variable the user set is
    left as it is.
    """
    return {name: value for name, value in ON_DEMAND_GPU_MEMORY.items() if name not in os.environ}


def _wait_for_workers(client, address):
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise FeatpipeError(
            f"the Dask scheduler at {address} has no workers after {WORKER_WAIT_S} s; "
            f"start some with `dask worker {address}`"
        ) from None


def worker_software():
    """What a worker must share with the client: featpipe's version and the Keras backend.

    Runs on each worker through ``client.run``: unpickling this function
    imports ``plumbing.cluster``, which is itself the check that the worker
    has featpipe installed.
    """
    return {"featpipe": featpipe_version(), "Keras backend": keras_backend_name()}


def keras_backend_name():
    """The Keras backend this process runs or would run, without importing Keras."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = keras_home() / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def check_workers(client):
    """Raise a FeatpipeError naming every worker that cannot run this featpipe.

    A worker without featpipe fails to import this function's module; one
    with another version or Keras backend reports it.
    """
    wanted = worker_software()
    found = client.run(worker_software, on_error="return")
    missing = sorted(address for address, result in found.items() if isinstance(result, BaseException))
    if missing:
        error = found[missing[0]]
        # A failure to unpickle the probe arrives wrapped in a bare Exception.
        reason = str(error) if type(error) is Exception else f"{type(error).__name__}: {error}"
        raise FeatpipeError(
            f"Dask worker(s) {', '.join(missing)} cannot run featpipe ({reason}); "
            f"install featpipe {wanted['featpipe']} in every worker's environment"
        )
    for key, value in wanted.items():
        other = {address: result[key] for address, result in found.items() if result.get(key) != value}
        if other:
            listed = ", ".join(f"{address} ({other[address]})" for address in sorted(other))
            raise FeatpipeError(
                f"Dask worker(s) {listed} run {key} other than this client's {value}; "
                "every worker needs the same featpipe version and Keras backend"
            )
    return found
