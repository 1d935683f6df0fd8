// The same as rt_golocked.go, built with cgo (CGO_ENABLED=1, linked to
// glibc): the runtime creates its Ms with pthread_create.
package main

/*
#include <unistd.h>
static int cgo_pid(void) { return getpid(); }
*/
import "C"

import (
	"runtime"
	"time"
)

func main() {
	_ = C.cgo_pid()
	for i := 0; i < 50; i++ {
		go func() {
			runtime.LockOSThread()
			time.Sleep(time.Hour)
		}()
	}
	time.Sleep(time.Hour)
}
