// Package consumertest provides an in-memory consumer.Source with error injection.
package consumertest

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/consumer"
)

// Source is an in-memory upstream: an ordered log with compaction, injected
// Watch failures, disconnects and progress messages. Safe for concurrent use.
type Source[E any] struct {
	mu        sync.Mutex
	events    []E // events[i] has revision compacted+i+1
	compacted int64
	failWatch []error
	streams   map[*stream[E]]struct{}
	changed   chan struct{}
	watches   []int64
}

// NewSource returns an empty Source.
func NewSource[E any]() *Source[E] {
	return &Source[E]{streams: map[*stream[E]]struct{}{}, changed: make(chan struct{})}
}

func (s *Source[E]) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Append adds an event and returns its revision.
func (s *Source[E]) Append(ev E) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, ev)
	s.notifyLocked()
	return s.compacted + int64(len(s.events))
}

// Revision returns the current revision.
func (s *Source[E]) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.compacted + int64(len(s.events))
}

// Snapshot returns all events ever appended that are still retained and the
// current revision (what a List would return, for Resync).
func (s *Source[E]) Snapshot() ([]E, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]E(nil), s.events...), s.compacted + int64(len(s.events))
}

// Compact drops events with revision <= rev; watching from before rev fails with OUT_OF_RANGE.
func (s *Source[E]) Compact(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev <= s.compacted {
		return
	}
	s.events = s.events[rev-s.compacted:]
	s.compacted = rev
}

// FailWatch makes the next len(errs) Watch calls fail with errs in turn.
func (s *Source[E]) FailWatch(errs ...error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failWatch = append(s.failWatch, errs...)
}

// Disconnect ends every open stream: its next Recv returns err.
func (s *Source[E]) Disconnect(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.streams {
		st.err = err
		delete(s.streams, st)
	}
	s.notifyLocked()
}

// Progress sends a progress message (current revision) on every open stream
// once it has delivered all events.
func (s *Source[E]) Progress() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.streams {
		st.progress = true
	}
	s.notifyLocked()
}

// Watches returns the start revisions of all Watch calls so far.
func (s *Source[E]) Watches() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.watches...)
}

// Watch implements consumer.Source.
func (s *Source[E]) Watch(ctx context.Context, start int64) (consumer.Stream[E], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watches = append(s.watches, start)
	if len(s.failWatch) > 0 {
		err := s.failWatch[0]
		s.failWatch = s.failWatch[1:]
		return nil, err
	}
	if start < s.compacted {
		return nil, status.Errorf(codes.OutOfRange, "start revision %d compacted (history starts after %d)", start, s.compacted)
	}
	st := &stream[E]{src: s, ctx: ctx, pos: start}
	s.streams[st] = struct{}{}
	return st, nil
}

type stream[E any] struct {
	src      *Source[E]
	ctx      context.Context
	pos      int64
	err      error
	progress bool
}

func (st *stream[E]) Recv() (E, int64, bool, error) {
	s := st.src
	var zero E
	for {
		s.mu.Lock()
		if st.err != nil {
			err := st.err
			s.mu.Unlock()
			return zero, 0, false, err
		}
		head := s.compacted + int64(len(s.events))
		if st.pos < head {
			if st.pos < s.compacted {
				delete(s.streams, st)
				s.mu.Unlock()
				return zero, 0, false, status.Errorf(codes.OutOfRange, "compacted while watching")
			}
			st.pos++
			ev := s.events[st.pos-s.compacted-1]
			s.mu.Unlock()
			return ev, st.pos, false, nil
		}
		if st.progress {
			st.progress = false
			s.mu.Unlock()
			return zero, head, true, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-st.ctx.Done():
			s.mu.Lock()
			delete(s.streams, st)
			s.mu.Unlock()
			return zero, 0, false, status.FromContextError(st.ctx.Err()).Err()
		case <-ch:
		}
	}
}

// String describes the source for test failures.
func (s *Source[E]) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("consumertest.Source{revision: %d, compacted: %d, open streams: %d}", s.compacted+int64(len(s.events)), s.compacted, len(s.streams))
}
