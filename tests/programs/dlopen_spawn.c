/* Loads a library well after exec (dlopen), asks it for N threads, and on
 * failure exits at once with _exit, as a worker that dies of it would.
 *
 *   dlopen_spawn LIB N [rename|inplace REPLACEMENT]
 *
 * With a replacement, the library's file is replaced on disk right after
 * the failure and before exiting: renamed over (a new inode, as package
 * managers do) or rewritten in place (the same inode). */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void replace_in_place(const char *lib, const char *with) {
    char buf[65536];
    int in = open(with, O_RDONLY), out = open(lib, O_WRONLY | O_TRUNC);
    ssize_t n;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, n) != n) break;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    printf("pid=%d\n", getpid());
    fflush(stdout);
    usleep(20000);
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "%s\n", dlerror());
        return 2;
    }
    int (*spawn)(int) = (int (*)(int))dlsym(h, "spawn_workers");
    if (!spawn) return 2;
    int failed = spawn(atoi(argv[2]));
    if (failed) {
        if (argc > 4 && strcmp(argv[3], "rename") == 0) rename(argv[4], argv[1]);
        if (argc > 4 && strcmp(argv[3], "inplace") == 0) replace_in_place(argv[1], argv[4]);
        _exit(1);
    }
    return 0;
}
