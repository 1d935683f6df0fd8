/* Two shapes of memory use, for OOM kills where the largest process is not
 * the one that grew:
 *   grow block MIB                 touches MIB MiB at once, says "ready",
 *                                  then sleeps
 *   grow steady MIB STEP MS DELAY  sleeps DELAY ms, then touches STEP MiB
 *                                  every MS ms up to MIB MiB, says
 *                                  "survived", then exits
 * Prints its pid first. Sleeps at most 120 s, so that nothing is left
 * behind by a test that died. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Stored, so that the compiler cannot drop the allocation as unused. */
char *volatile last;

static void touch(long mib) {
    char *p = malloc(mib << 20);
    if (!p) exit(2);
    memset(p, 1, mib << 20);
    last = p;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: grow block MIB | grow steady MIB STEP MS DELAY\n");
        return 2;
    }
    long mib = atol(argv[2]);
    printf("pid=%d\n", getpid());
    fflush(stdout);
    if (strcmp(argv[1], "block") == 0) {
        touch(mib);
        printf("ready\n");
        fflush(stdout);
        sleep(120);
        return 0;
    }
    if (argc < 6) return 2;
    long step = atol(argv[3]), ms = atol(argv[4]), delay = atol(argv[5]);
    sleep_ms(delay);
    for (long done = 0; done < mib; done += step) {
        touch(step);
        sleep_ms(ms);
    }
    printf("survived\n");
    return 0;
}
