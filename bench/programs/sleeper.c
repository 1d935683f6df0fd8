/* A process that maps a handful of shared libraries (linked against libm,
 * libz and libstdc++) and waits: the population for the address-space
 * memory figure. */
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <zlib.h>

int main(int argc, char **argv) {
    volatile double x = sqrt((double)argc);
    volatile unsigned long v = zlibVersion()[0];
    (void)argv;
    (void)x;
    (void)v;
    pause();
    return 0;
}
