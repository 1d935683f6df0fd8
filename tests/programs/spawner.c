/* A library that starts a worker pool, the shape of a vendored BLAS. The
 * tests build it without a build id and load it with dlopen. */
#include <pthread.h>

static void *pool_worker(void *arg) {
    (void)arg;
    return NULL;
}

int spawn_workers(int n) {
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, pool_worker, NULL) != 0)
            failed++;
        else
            pthread_detach(t);
    }
    return failed;
}
