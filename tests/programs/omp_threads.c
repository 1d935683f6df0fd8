/* An OpenMP parallel region: libgomp's pool asks for OMP_NUM_THREADS - 1
 * threads. Under a tight RLIMIT_NPROC libgomp prints
 * "libgomp: Thread creation failed: ..." and exits 1. */
#include <omp.h>
#include <stdio.h>

int main(void) {
    int n = 0;
#pragma omp parallel
    {
#pragma omp atomic
        n++;
    }
    printf("threads=%d\n", n);
    return 0;
}
