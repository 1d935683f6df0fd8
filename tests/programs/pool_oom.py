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


if __name__ == "__main__":
    print(f"parent={os.getpid()}", flush=True)
    pool = mp.Pool(3)
    r = pool.map_async(work, range(3))
    r.wait(4)
    print("hung" if not r.ready() else "done", flush=True)
    # terminate() can hang on a pool that lost a worker: kill them.
    for w in pool._pool:
        try:
            os.kill(w.pid, 9)
        except ProcessLookupError:
            pass
    os._exit(0)
