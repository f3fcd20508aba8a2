"""`featpipe` and `dvc` commands without the interpreter's start-up: forked from a process that imported the libraries.

The end-to-end DVC tests run about twenty commands: `dvc` from the test,
`featpipe <stage>` from DVC. A new process spends 3 s importing scikit-learn
and DVC, and 10 s more importing TensorFlow and Keras, before it does a
second of work on tiny data. Here one server process imports those libraries
once (never featpipe itself) and forks a child per command. Each child takes
the caller's argument list, working folder, environment and stdin, stdout and
stderr (passed over a Unix socket), puts ``PYTHONPATH`` first on ``sys.path``
as Python's start-up would, imports featpipe afresh from there (so a copy's
own code runs, edits included) and exits with the command's exit code, which
the caller exits with.

What this leaves out is the interpreter's and the console script's start:
tests/test_cli.py runs `featpipe` as a real process, and so do the tests that
kill one.

Usage: :func:`start` the server and put :func:`write_clients`' folder first
on ``PATH``; a process then runs ``featpipe ...`` or ``dvc ...`` as usual.
"""

import atexit
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

# What the commands import before their first line of work (what `featpipe <stage>` and `dvc` import).
HEAVY = (
    "keras", "tensorflow", "h5py", "scipy.stats", "sklearn.ensemble", "sklearn.svm", "sklearn.linear_model",
    "sklearn.neighbors", "sklearn.model_selection", "skops.io", "matplotlib.figure", "matplotlib.backends.backend_agg",
    "click", "yaml", "dvc.cli", "dvc.repo",
)
COMMANDS = ("featpipe", "dvc")
CLIENT = '''#!{python} -IS
# `{name}` run by the warm server at {address} (tests/warm_commands.py).
import json, os, socket, sys
request = json.dumps({{"argv": ["{name}", *sys.argv[1:]], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
with socket.socket(socket.AF_UNIX) as server:
    server.connect("{address}")
    socket.send_fds(server, [len(request).to_bytes(8, "big")], [0, 1, 2])
    server.sendall(request)
    reply = server.recv(4)
code = int.from_bytes(reply, "big", signed=True) if len(reply) == 4 else 70
if code < 0:
    os.kill(os.getpid(), -code)  # killed by a signal: so is this process
os._exit(code)
'''


def start(address, modules=HEAVY, timeout=180):
    """Start the server listening at ``address`` (a path), once it has imported ``modules``; the Popen."""
    server = subprocess.Popen([sys.executable, __file__, str(address), *modules], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not Path(address).exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the warm command server did not start (exit code {server.poll()})")
        time.sleep(0.1)
    return server


def write_clients(folder, address):
    """Write a ``featpipe`` and a ``dvc`` executable into ``folder`` that run their command on the server."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        client = folder / name
        client.write_text(CLIENT.format(python=sys.executable, name=name, address=address))
        client.chmod(0o755)
    return folder


def serve(address, modules):
    """Import ``modules``, then fork a child for each request until killed; each child's exit code goes back."""
    import importlib

    with _stderr_to_devnull():  # TensorFlow's C++ start-up lines, as featpipe's own import hides them
        for module in modules:
            importlib.import_module(module)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(address + ".binding")
    listener.listen(16)
    os.rename(address + ".binding", address)  # the address appears once the server accepts
    waiting = {}  # child pid -> the client's connection, which gets its exit code
    while True:
        if select.select([listener], [], [], 0.02 if waiting else None)[0]:  # idle: wait for the next command
            connection, _ = listener.accept()
            request, fds = _receive(connection)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in waiting.values():
                    other.close()
                _run_child(request, fds, backend)  # never returns
            for fd in fds:
                os.close(fd)
            waiting[pid] = connection
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = waiting.pop(pid)
            with contextlib.suppress(OSError):
                connection.sendall(os.waitstatus_to_exitcode(status).to_bytes(4, "big", signed=True))
            connection.close()


def _receive(connection):
    header, fds, _, _ = socket.recv_fds(connection, 8, 3)
    size, payload = int.from_bytes(header, "big"), b""
    while len(payload) < size:
        chunk = connection.recv(size - len(payload))
        if not chunk:
            raise ConnectionError("the client left before its request was whole")
        payload += chunk
    return json.loads(payload), fds


def _run_child(request, fds, backend):
    """Become the command: the caller's stdio, folder, environment and arguments; exit with its code."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if os.environ.get("KERAS_BACKEND", "tensorflow") != backend:
        sys.exit(f"warm_commands: the server imported Keras on {backend}, the command asks for {os.environ['KERAS_BACKEND']}")
    sys.argv = request["argv"]
    sys.path[:0] = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    try:
        if sys.argv[0] == "featpipe":
            from pipeline.cli import main

            sys.exit(main())
        from dvc.cli import main

        sys.exit(main(sys.argv[1:]))
    except SystemExit as done:
        code = _exit_code(done.code)
    except BaseException:  # as the interpreter reports an uncaught exception
        traceback.print_exc()
        code = 1
    # What the interpreter runs at exit (threads joined, their exit hooks such as joblib's worker shutdown, then
    # atexit's functions), but not the teardown of every module: seconds with TensorFlow, and not at stake here.
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_code(code):
    """The exit status Python gives ``sys.exit(code)``."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


@contextlib.contextmanager
def _stderr_to_devnull():
    # plumbing.backend.native_stderr_silenced, which the server may not import: its children import featpipe afresh.
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


if __name__ == "__main__":
    sys.path.remove(str(Path(__file__).parent))  # the server imports no test module, nor featpipe
    serve(sys.argv[1], sys.argv[2:])
