/* An OpenMP parallel region: libgomp's pool asks for OMP_NUM_THREADS - 1
 * threads. Under a tight RLIMIT_NPROC libgomp prints
 * "libgomp: Thread creation failed: ..." and exits 1. An optional argument
 * keeps the process (and libgomp's idle team) alive that many seconds. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = 0;
#pragma omp parallel
    {
#pragma omp atomic
        n++;
    }
    printf("threads=%d\n", n);
    fflush(stdout);
    if (argc > 1) sleep(atoi(argv[1]));
    return 0;
}
