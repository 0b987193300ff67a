// Package parallel runs independent pieces of CPU work on up to GOMAXPROCS goroutines.
package parallel

import (
	"runtime"
	"sync"
)

// For runs fn(0..n-1) on up to GOMAXPROCS goroutines, each taking a contiguous range of
// at least minPer indexes; below that it runs inline. fn must be safe to call
// concurrently for different indexes.
func For(n, minPer int, fn func(i int)) {
	minPer = max(minPer, 1)
	workers := min(runtime.GOMAXPROCS(0), (n+minPer-1)/minPer)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				fn(i)
			}
		}()
	}
	wg.Wait()
}
