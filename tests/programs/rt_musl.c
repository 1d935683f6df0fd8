/* Built with musl-gcc, dynamic and -static: start_workers creates threads
 * running worker_main, which block, until pthread_create fails; then it
 * prints the error and exits 1 at once. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void *worker_main(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

static int __attribute__((noinline)) start_workers(int max) {
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 64 * 1024);
    for (int i = 0; i < max; i++) {
        pthread_t t;
        int err = pthread_create(&t, &a, worker_main, NULL);
        if (err) {
            printf("created=%d\n", i);
            fprintf(stderr, "rt_musl: pthread_create: %s\n", strerror(err));
            return err;
        }
    }
    return 0;
}

int main(void) {
    printf("pid=%d\n", getpid());
    fflush(stdout);
    if (start_workers(4096)) {
        fflush(stdout);
        _exit(1);
    }
    return 0;
}
