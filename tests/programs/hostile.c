/* What an unprivileged user can throw at a root tracer.
 *
 *   hostile name HEX N [MS] renames itself (PR_SET_NAME) to the bytes HEX,
 *                           asks for N threads (under ulimit -u they fail),
 *                           then waits MS milliseconds. Prints pid= and
 *                           failed=.
 *   hostile bloat N [MS]    re-executes itself with a 2 MiB argv, then
 *                           forks N children that exit at once, one after
 *                           the other, then waits MS milliseconds.
 *                           Prints pid= and forked=.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void *idle(void *arg) {
    (void)arg;
    pause();
    return NULL;
}

static int name(const char *hex, int n, int ms) {
    char comm[16] = {0};
    for (int i = 0; i < 15 && hex[2 * i] && hex[2 * i + 1]; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        comm[i] = (char)v;
    }
    prctl(PR_SET_NAME, comm);
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, idle, NULL) != 0) failed++;
    }
    if (ms > 0) usleep(ms * 1000);
    printf("pid=%d\nfailed=%d\n", getpid(), failed);
    fflush(stdout);
    _exit(0);
}

/* 16 arguments of 128 KiB (the most one argument may hold). */
#define ARGS 16
#define ARG_BYTES (128 * 1024 - 1)

static int bloat(char **argv, int n, int ms) {
    if (!(argv[3] && argv[4] && strcmp(argv[4], "bloated") == 0)) {
        /* The argv and env may take a quarter of the stack limit. */
        struct rlimit s = {32 << 20, 32 << 20};
        setrlimit(RLIMIT_STACK, &s);
        char *big[ARGS + 6];
        int k = 0;
        big[k++] = argv[0];
        big[k++] = "bloat";
        big[k++] = argv[2];
        big[k++] = argv[3] ? argv[3] : "0";
        big[k++] = "bloated";
        for (int i = 0; i < ARGS; i++) {
            big[k] = malloc(ARG_BYTES + 1);
            memset(big[k], 'A' + i, ARG_BYTES);
            big[k][ARG_BYTES] = 0;
            k++;
        }
        big[k] = NULL;
        execv("/proc/self/exe", big);
        perror("execv");
        return 1;
    }
    printf("pid=%d\n", getpid());
    fflush(stdout);
    int forked = 0;
    for (int i = 0; i < n; i++) {
        pid_t c = fork();
        if (c == 0) _exit(0);
        if (c > 0) {
            forked++;
            waitpid(c, NULL, 0);
        }
    }
    if (ms > 0) usleep(ms * 1000);
    printf("forked=%d\n", forked);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "name") == 0) return name(argv[2], atoi(argv[3]), argc > 4 ? atoi(argv[4]) : 0);
    if (argc >= 3 && strcmp(argv[1], "bloat") == 0)
        return bloat(argv, atoi(argv[2]), argc > 3 ? atoi(argv[3]) : 0);
    fprintf(stderr, "usage: hostile name HEX N [MS] | hostile bloat N [MS]\n");
    return 2;
}
