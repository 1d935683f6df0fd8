// Go without cgo (CGO_ENABLED=0, static): 50 goroutines each lock their OS
// thread and block, so the runtime needs one M per goroutine; under a
// small RLIMIT_NPROC its clone fails and the runtime dies at once with
// "runtime: failed to create new OS thread".
package main

import (
	"runtime"
	"time"
)

func main() {
	for i := 0; i < 50; i++ {
		go func() {
			runtime.LockOSThread()
			time.Sleep(time.Hour)
		}()
	}
	time.Sleep(time.Hour)
}
