/* Allocates and touches memory in 8 MiB steps until it has MIB MiB, or
 * until the OOM killer ends it. Prints its pid first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 1024;
    printf("pid=%d\n", getpid());
    fflush(stdout);
    for (long done = 0; done < mib; done += 8) {
        char *p = malloc(8 << 20);
        if (!p) return 2;
        memset(p, 1, 8 << 20);
    }
    printf("survived\n");
    return 0;
}
