/* The storm generator: W workers (one per core by default) call
 * pthread_create as fast as they can for S seconds, under an RLIMIT_NPROC
 * that lets none of those calls succeed, and count every failure exactly:
 * the count threadtrace's summary must equal.
 *
 * Run it as an unprivileged user (RLIMIT_NPROC does not bind root). It
 * starts its workers, then lowers its own RLIMIT_NPROC to 1, below what the
 * user already runs, and only then lets the workers go. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop;
static atomic_int go;

static void *never(void *arg) { return arg; }

static void *worker(void *arg) {
    unsigned long *failed = arg;
    while (!atomic_load(&go))
        ;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        pthread_t t;
        if (pthread_create(&t, NULL, never, NULL) == 0)
            pthread_join(t, NULL); /* the limit let one through: not a failure */
        else
            (*failed)++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    long workers = argc > 2 ? atol(argv[2]) : sysconf(_SC_NPROCESSORS_ONLN);
    pthread_t *t = calloc(workers, sizeof *t);
    unsigned long *failed = calloc(workers * 8, sizeof *failed); /* a cache line each */
    for (long i = 0; i < workers; i++)
        if (pthread_create(&t[i], NULL, worker, &failed[i * 8]) != 0) {
            perror("storm: cannot start a worker");
            return 1;
        }
    struct rlimit one = {1, 1};
    if (setrlimit(RLIMIT_NPROC, &one) != 0) {
        perror("storm: setrlimit(RLIMIT_NPROC)");
        return 1;
    }
    atomic_store(&go, 1);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&stop, 1);
    unsigned long total = 0;
    for (long i = 0; i < workers; i++) {
        pthread_join(t[i], NULL);
        total += failed[i * 8];
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("pid=%d\nworkers=%ld\nfailed=%lu\nseconds=%.3f\nrate=%.0f\n", getpid(), workers, total,
           s, total / s);
    return 0;
}
