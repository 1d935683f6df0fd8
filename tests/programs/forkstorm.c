/* A fork storm of many processes: WORKERS loops for SECONDS, each forking
 * children that try to fork once more themselves, so that the failures
 * come from many distinct processes. In a pids cgroup at its max most
 * forks fail with EAGAIN. A child keeps its pid and tries again every
 * 20 ms until a fork of its own fails: the storm fills the cgroup however
 * slowly this machine forks (an emulated guest forks a hundred times
 * slower than hardware), then turns over a child per failure. Every failed
 * fork, of any process, is counted in shared memory: the exact total is
 * printed as "failed=N", the processes that saw one as "failing=N". */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct shared {
    atomic_long failed;
    atomic_long failing;
};

static struct shared *sh;
static double end;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void failed(int *counted) {
    atomic_fetch_add(&sh->failed, 1);
    if (!*counted) {
        *counted = 1;
        atomic_fetch_add(&sh->failing, 1);
    }
}

/* A child: holds its pid, forking every 20 ms, until a fork fails. */
static void child(void) {
    int counted = 0;
    do {
        usleep(20000);
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p < 0) {
            failed(&counted);
            break;
        }
        waitpid(p, NULL, 0);
    } while (now() < end);
    _exit(0);
}

int main(int argc, char **argv) {
    int workers = argc > 1 ? atoi(argv[1]) : 8;
    double seconds = argc > 2 ? atof(argv[2]) : 3;
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return 2;
    end = now() + seconds;
    for (int w = 0; w < workers; w++) {
        if (fork() == 0) {
            int counted = 0;
            while (now() < end) {
                pid_t p = fork();
                if (p == 0) child();
                if (p < 0) failed(&counted);
                while (waitpid(-1, NULL, WNOHANG) > 0) {}
            }
            while (wait(NULL) > 0) {}
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {}
    printf("failed=%ld\nfailing=%ld\n", atomic_load(&sh->failed), atomic_load(&sh->failing));
    return 0;
}
