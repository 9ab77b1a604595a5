"""The long-lived benchmark workers' shared end (bench/compare.py, bench/compare_serving.py)."""


def close_worker(process, timeout=10):
    """Ends a worker that reads requests from its standard input: closing it asks the worker
    to stop; one that does not within `timeout` seconds (interrupted mid-measurement) is
    killed."""
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=timeout)
        except Exception:  # subprocess.TimeoutExpired
            process.kill()
