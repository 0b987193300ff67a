package parallel

import (
	"sync/atomic"
	"testing"
)

func TestForRunsEveryIndexOnce(t *testing.T) {
	tests := []struct {
		name      string
		n, minPer int
	}{
		{name: "empty", n: 0, minPer: 64},
		{name: "inline", n: 10, minPer: 64},
		{name: "split", n: 1000, minPer: 64},
		{name: "zero minPer", n: 7, minPer: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			counts := make([]atomic.Int32, tt.n)
			For(tt.n, tt.minPer, func(i int) { counts[i].Add(1) })
			for i := range counts {
				if got := counts[i].Load(); got != 1 {
					t.Fatalf("index %d ran %d times, want 1", i, got)
				}
			}
		})
	}
}
