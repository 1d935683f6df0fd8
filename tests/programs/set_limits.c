/* Changes RLIMIT_NOFILE twice: through glibc's setrlimit() (which is the
 * prlimit64 syscall) and through the setrlimit syscall itself. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    struct rlimit a = {.rlim_cur = 512, .rlim_max = 4096};
    struct rlimit b = {.rlim_cur = 256, .rlim_max = 2048};
    struct rlimit before;
    getrlimit(RLIMIT_NOFILE, &before);
    int r1 = setrlimit(RLIMIT_NOFILE, &a);
    int r2 = syscall(SYS_setrlimit, RLIMIT_NOFILE, &b);
    printf("pid=%d\nbefore_soft=%lu\nbefore_hard=%lu\nr1=%d\nr2=%d\n", getpid(), (unsigned long)before.rlim_cur,
           (unsigned long)before.rlim_max, r1, r2);
    return 0;
}
