/* Process churn for the soak test: N short-lived processes, one after
 * another, each exec'ing /bin/true with an argument of varying length (a
 * command line to remember), and every FAIL_EVERY-th one running
 * thread_burst as nobody under RLIMIT_NPROC 1 instead (a failure to
 * attribute). Prints "done=K" every 1000 processes and at the end.
 *
 * usage: churn N FAIL_EVERY THREAD_BURST_PATH [ARG_MAX (2048)] */
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: churn N FAIL_EVERY THREAD_BURST\n");
        return 2;
    }
    long n = atol(argv[1]);
    long fail_every = atol(argv[2]);
    const char *burst = argv[3];
    long arg_max = argc > 4 ? atol(argv[4]) : 2048;
    if (arg_max < 1 || arg_max > 4000) arg_max = 2048;
    static char arg[4096];
    long failing = 0;
    for (long i = 1; i <= n; i++) {
        size_t len = (size_t)(i * 37 % arg_max) + 1;
        memset(arg, 'a' + (int)(i % 26), len);
        arg[len] = 0;
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            if (fail_every > 0 && i % fail_every == 0) {
                struct rlimit one = {1, 1};
                if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) _exit(3);
                setrlimit(RLIMIT_NPROC, &one);
                execl(burst, burst, "4", (char *)NULL);
                _exit(4);
            }
            execl("/bin/true", "true", arg, (char *)NULL);
            _exit(5);
        }
        int status;
        waitpid(pid, &status, 0);
        if (fail_every > 0 && i % fail_every == 0) failing++;
        if (i % 1000 == 0 || i == n) {
            printf("done=%ld failing=%ld\n", i, failing);
            fflush(stdout);
        }
    }
    return 0;
}
