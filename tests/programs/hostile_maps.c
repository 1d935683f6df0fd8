/* Loads the spawner library in hostile ways, asks it for threads (which
 * fails under `ulimit -u 1`), then exits:
 *
 *   hostile_maps memfd LIB GIB   LIB's bytes in a memfd grown (sparse) to
 *                                GIB GiB, loaded from /proc/self/fd; waits
 *                                1 s, so that the tracer reads it live
 *   hostile_maps fifo LIB        after the failure LIB becomes a FIFO
 *   hostile_maps many DIR N      DIR/lib0.so .. lib{N-1}.so all loaded;
 *                                the last one's spawn_workers is called
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int (*spawn_fn)(int);

static spawn_fn load(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "%s\n", dlerror());
        exit(2);
    }
    return (spawn_fn)dlsym(h, "spawn_workers");
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    printf("pid=%d\n", getpid());
    fflush(stdout);
    if (strcmp(argv[1], "memfd") == 0 && argc > 3) {
        int fd = memfd_create("spawner", 0), in = open(argv[2], O_RDONLY);
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof buf)) > 0)
            if (write(fd, buf, n) != n) return 2;
        if (ftruncate(fd, (off_t)atoi(argv[3]) << 30) != 0) return 2;
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        int failed = load(path)(4);
        sleep(1);
        _exit(failed ? 1 : 0);
    }
    if (strcmp(argv[1], "fifo") == 0) {
        int failed = load(argv[2])(4);
        unlink(argv[2]);
        mkfifo(argv[2], 0666);
        _exit(failed ? 1 : 0);
    }
    if (strcmp(argv[1], "many") == 0 && argc > 3) {
        int n = atoi(argv[3]);
        spawn_fn last = NULL;
        char path[4096];
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/lib%d.so", argv[2], i);
            last = load(path);
        }
        int failed = last(4);
        sleep(1);
        _exit(failed ? 1 : 0);
    }
    return 2;
}
