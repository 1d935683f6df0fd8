# Incident 3 (docs/incidents.md): a multiprocessing.Pool worker is OOM-killed; map_async never
# completes. Waits a bounded time, then says whether it hung.
import multiprocessing as mp
import os
import time


def work(n):
    if n == 1:
        # Grows 10 MiB every 50 ms, written so resident, past the cgroup's
        # limit: the shape of a leak, not a single allocation.
        held = []
        for _ in range(40):
            held.append(b"x" * (10 << 20))
            time.sleep(0.05)
        return len(held)
    time.sleep(0.5)
    return n


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    print(f"parent={os.getpid()}", flush=True)
    pool = mp.Pool(3)
    r = pool.map_async(work, range(3))
    workers = [w.pid for w in pool._pool]
    # At least 4 s, and on a slow machine (an emulated guest) until a worker
    # is gone, so that the leak has reached the limit before the workers are
    # killed below.
    start = time.monotonic()
    while not r.ready() and time.monotonic() - start < 60:
        if time.monotonic() - start >= 4 and not all(alive(p) for p in workers):
            time.sleep(1)
            break
        time.sleep(0.1)
    print("hung" if not r.ready() else "done", flush=True)
    # terminate() can hang on a pool that lost a worker: kill them.
    for w in pool._pool:
        try:
            os.kill(w.pid, 9)
        except ProcessLookupError:
            pass
    os._exit(0)
