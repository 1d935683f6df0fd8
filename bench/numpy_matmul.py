"""The numpy workload: matrix products on OpenBLAS's thread pool, timed by
itself (the import, and the pool's start, are included: that is where
OpenBLAS creates its threads)."""
import sys
import time

t0 = time.perf_counter()
import numpy as np

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
rng = np.random.default_rng(1)
a = rng.random((n, n))
b = rng.random((n, n))
for _ in range(rounds):
    a = (a @ b) / n
print(f"checksum={a.sum():.6e}")
print(f"seconds={time.perf_counter() - t0:.6f}")
