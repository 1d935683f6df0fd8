/* Fails N thread creations and N forks, taking turns, as fast as it can:
 * on one CPU the kernel's per-CPU slot for the last failure changes key at
 * every call. Run it under a RLIMIT_NPROC that lets nothing through.
 * Prints its pid and how many of each failed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void *nothing(void *arg) { return arg; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    long threads = 0, forks = 0;
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, nothing, NULL) == 0)
            pthread_join(t, NULL);
        else
            threads++;
        pid_t p = fork();
        if (p == 0)
            _exit(0);
        if (p > 0)
            waitpid(p, NULL, 0);
        else
            forks++;
    }
    printf("pid=%d\nthread_failed=%ld\nfork_failed=%ld\n", getpid(), threads, forks);
    return 0;
}
