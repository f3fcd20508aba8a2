"""Connecting to Dask: unreachable schedulers and unfit workers are refused up front."""

import os
import sys

import pytest

from plumbing import cluster
from plumbing.cluster import check_workers, dask_client
from plumbing.errors import FeatpipeError
from tests.conftest import free_port
from tests.test_dvc_deps import PACKAGES as FEATPIPE_PACKAGES  # every one, so that no featpipe module is left to import


def test_unreachable_scheduler_is_one_line_naming_it():
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(FeatpipeError) as error:
        with dask_client(scheduler=address, connect_timeout=0.5):
            pass
    assert str(error.value).startswith(f"cannot reach the Dask scheduler at {address}: no answer within 0.5 s")
    assert "\n" not in str(error.value)


def test_malformed_address_is_refused():
    with pytest.raises(FeatpipeError, match="cannot reach the Dask scheduler at nonsense://x: unknown address scheme"):
        with dask_client(scheduler="nonsense://x"):
            pass


def test_scheduler_and_local_workers_together_are_refused():
    with pytest.raises(FeatpipeError, match="not both"):
        with dask_client(scheduler="tcp://127.0.0.1:8786", workers=2):
            pass


def test_connects_and_checks_workers(dask_scheduler):
    with dask_client(scheduler=dask_scheduler) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert all(found["featpipe"] == cluster.worker_software()["featpipe"] for found in check_workers(client).values())
    assert client.status == "closed"


def test_other_featpipe_version_on_workers_is_named(dask_scheduler, monkeypatch):
    # The client claims another version; the workers, running the real code, disagree.
    monkeypatch.setattr(cluster, "featpipe_version", lambda: "9.9.9")
    with pytest.raises(FeatpipeError, match=r"Dask worker\(s\) tcp://127\.0\.0\.1:\d+ \(0\.1\.0\), tcp://.* run featpipe other than this client's 9\.9\.9"):
        with dask_client(scheduler=dask_scheduler):
            pass


def test_other_keras_backend_on_workers_is_named(dask_scheduler, monkeypatch):
    # The workers run this process's backend, whichever it is; the client claims another one.
    workers = cluster.keras_backend_name()
    claimed = "torch" if workers != "torch" else "jax"
    monkeypatch.setattr(cluster, "keras_backend_name", lambda: claimed)
    with pytest.raises(FeatpipeError, match=rf"tcp://.* \({workers}\) run Keras backend other than this client's {claimed}"):
        with dask_client(scheduler=dask_scheduler):
            pass


def hide_featpipe():
    """Make this worker process unable to import featpipe, as if it were not installed."""

    class Missing:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FEATPIPE_PACKAGES:
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Missing())
    for name in [name for name in sys.modules if name.split(".")[0] in FEATPIPE_PACKAGES]:
        del sys.modules[name]


@pytest.mark.slow
def test_worker_without_featpipe_is_named():
    import cloudpickle
    from distributed import Client, LocalCluster

    # The probe must reach the worker by value: featpipe's own modules are what it lacks.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as running:
            with Client(running) as client:
                broken = sorted(client.scheduler_info()["workers"])[0]
                client.run(hide_featpipe, workers=[broken])
                with pytest.raises(FeatpipeError, match=f"Dask worker\\(s\\) {broken} cannot run featpipe .*No module named"):
                    check_workers(client)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_scheduler_without_workers_is_said(monkeypatch):
    from distributed import LocalCluster

    monkeypatch.setattr(cluster, "WORKER_WAIT_S", 0.5)
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=":0") as empty:
        with pytest.raises(FeatpipeError, match=f"{empty.scheduler_address} has no workers .* `dask worker {empty.scheduler_address}`"):
            with dask_client(scheduler=empty.scheduler_address):
                pass


def test_local_cluster_of_n_workers_on_loopback():
    with dask_client(workers=2, threads_per_worker=1) as client:
        addresses = list(client.scheduler_info()["workers"])
        assert len(addresses) == 2 and all(address.startswith("tcp://127.0.0.1:") for address in addresses)
        assert cluster.dashboard_link(client).startswith("http://127.0.0.1:")


def test_local_workers_take_gpu_memory_as_they_use_it(monkeypatch):
    # Else JAX gives the first of them 75% of the GPU, TensorFlow all of it, and the next one fails.
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "false")  # the user's choice wins
    with dask_client(workers=1, threads_per_worker=1) as client:
        found = client.run(lambda: [os.environ.get(name) for name in ("XLA_PYTHON_CLIENT_PREALLOCATE", "TF_FORCE_GPU_ALLOW_GROWTH")])
    assert list(found.values()) == [["false", "false"]]


@pytest.fixture
def web_server():
    """A plain HTTP server on a free port: something listens there, but it doesn't speak Dask."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", free_port()), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("address", ["not a url::", "tcp://127.0.0.1", "web server"])
def test_a_bad_scheduler_address_is_one_line_with_no_hang_and_no_traceback(tiny_image_store, web_server, address):
    import subprocess
    from pathlib import Path

    address = web_server if address == "web server" else address
    command = ["extract", "--backbone", "mobilenet_v2", "--weights", "none", "--images", str(tiny_image_store),
               "--scheduler", address, "--params", os.devnull]  # every default, not the checkout's params.yaml
    # The timeout only catches a hang (the probe gives up after 5 s); no speed is asserted.
    result = subprocess.run(
        [sys.executable, "-c", "from pipeline.cli import main; main()", *command], capture_output=True, text=True,
        timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    errors = [line for line in result.stderr.splitlines() if not line.startswith("WARNING: random weights")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert errors[0].startswith(f"featpipe: error: cannot reach the Dask scheduler at {address}: ")
