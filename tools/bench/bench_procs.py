"""Process handling shared by the Python benchmarks in tools/bench (imported by them)."""
import subprocess


def stop(procs, grace_seconds=10):
    """Terminates every process, then kills those still running after the grace period."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            p.kill()
