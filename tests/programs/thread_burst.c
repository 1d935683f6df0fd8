/* Asks for N threads and counts, exactly, how many pthread_create calls
 * failed: the number threadtrace's summary must equal. An optional second
 * argument waits that many milliseconds first, a third holds the threads
 * alive that long. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg) {
    (void)arg;
    pthread_mutex_lock(&gate); /* park until main releases everyone */
    pthread_mutex_unlock(&gate);
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 64;
    if (argc > 2) usleep(atoi(argv[2]) * 1000);
    pthread_t *t = calloc(n, sizeof *t);
    char *ok = calloc(n, 1);
    int failed = 0, created = 0;
    pthread_mutex_lock(&gate);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&t[i], NULL, worker, NULL) == 0) {
            ok[i] = 1;
            created++;
        } else {
            failed++;
        }
    }
    if (argc > 3) usleep(atoi(argv[3]) * 1000);
    pthread_mutex_unlock(&gate);
    for (int i = 0; i < n; i++)
        if (ok[i]) pthread_join(t[i], NULL);
    printf("pid=%d\ncreated=%d\nfailed=%d\n", getpid(), created, failed);
    return 0;
}
