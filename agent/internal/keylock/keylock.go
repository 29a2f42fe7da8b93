// Package keylock serialises work per key (a Calamari version, a file of
// a task) without one lock for everything: pushes of different versions go
// on side by side, two pushes of the same version take turns.
package keylock

import (
	"context"
	"fmt"
	"sync"
)

// Map is a set of locks named by strings. The zero value is ready to use.
// A key's lock exists only while someone holds or waits for it, so the map
// does not grow with every key ever used.
type Map struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	ch   chan struct{} // holds a token while the key is locked
	refs int           // holders and waiters
}

// Lock waits until key is free or ctx is done, and returns the function
// that unlocks it. Waiting honours ctx because the holder may be a
// transfer on a connection that is dying but has not noticed yet.
func (m *Map) Lock(ctx context.Context, key string) (unlock func(), err error) {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = map[string]*entry{}
	}
	e := m.locks[key]
	if e == nil {
		e = &entry{ch: make(chan struct{}, 1)}
		m.locks[key] = e
	}
	e.refs++
	m.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
	case <-ctx.Done():
		m.release(key, e)
		return nil, fmt.Errorf("wait for %s: %w", key, ctx.Err())
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.ch
			m.release(key, e)
		})
	}, nil
}

// Held lists the keys locked or waited for right now.
func (m *Map) Held() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]string, 0, len(m.locks))
	for k := range m.locks {
		keys = append(keys, k)
	}
	return keys
}

func (m *Map) release(key string, e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(m.locks, key)
	}
}
