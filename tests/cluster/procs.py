"""What the process-level Python tests share: free ports, waiting for a line a process prints,
reading files, stopping the processes a test started and removing its directory."""
import os
import shutil
import socket
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(p, ready, stream="stdout", seconds=60):
    """Reads `p`'s stdout (or stderr) until a line containing `ready`; returns what was read up
    to and including it. Raises if the process exits first or nothing matches in time."""
    pipe = getattr(p, stream)
    deadline = time.time() + seconds
    seen = ""
    while time.time() < deadline:
        line = pipe.readline()
        if not line:
            raise RuntimeError(f"exited: {p.wait()}; read: {seen[-2000:]}")
        seen += line
        if ready in line:
            return line if stream == "stdout" else seen
    raise RuntimeError(f"no '{ready}' in {seconds} s")


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def remove_dir(path):
    """Removes a test's directory (stores, journals, logs) unless RSD_KEEP_TEST_DIRS is set, as
    the C++ tests' MakeTempDir does."""
    if not os.environ.get("RSD_KEEP_TEST_DIRS"):
        shutil.rmtree(path, ignore_errors=True)


def stop(procs):
    """Terminates every process still running, waits for each, closes its pipes."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait(timeout=30)
        for pipe in (p.stdout, p.stderr):
            if pipe:
                pipe.close()
