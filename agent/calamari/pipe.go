package calamari

import (
	"io"
	"sync"
)

// pipeRoom is how many bytes a bufPipe holds before its writer waits.
const pipeRoom = 1 << 20

// pipeChunk is the size of the pooled buffers a bufPipe copies writes
// into: the receive's chunk (protocol's receiveChunk).
const pipeChunk = 128 << 10

var pipeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, pipeChunk); return &b }}

// chunk is one write's bytes in a bufPipe, of which off are read.
type chunk struct {
	b   *[]byte
	off int
}

// bufPipe is io.Pipe with room for pipeRoom bytes: a write returns once
// its bytes are copied in, not once the reader has taken them. Between
// the receive of a push and the extraction, io.Pipe made the receive wait
// for the extractor to work through most of each chunk (flate reads a
// stored block 32 KiB at a time), so the two took turns more than they
// overlapped.
type bufPipe struct {
	mu      sync.Mutex
	changed sync.Cond
	chunks  []chunk // queued writes, the first partly read
	queued  int
	wclosed bool
	werr    error // what the reader gets after the queue: nil is io.EOF
	rclosed bool
	rerr    error // what the writer gets
}

func newBufPipe() *bufPipe {
	p := &bufPipe{}
	p.changed.L = &p.mu
	return p
}

// Write copies b into the pipe, waiting while it is full. After
// CloseRead it fails with the reader's error.
func (p *bufPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.queued >= pipeRoom && !p.rclosed {
		p.changed.Wait()
	}
	switch {
	case p.rclosed:
		return 0, p.rerr
	case p.wclosed:
		return 0, io.ErrClosedPipe
	case len(b) == 0:
		return 0, nil
	}
	c := pipeBuffers.Get().(*[]byte)
	*c = append((*c)[:0], b...)
	p.chunks = append(p.chunks, chunk{b: c})
	p.queued += len(b)
	p.changed.Broadcast()
	return len(b), nil
}

// CloseWrite ends the writes: the reader gets what is queued, then err
// (io.EOF if err is nil).
func (p *bufPipe) CloseWrite(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		err = io.EOF
	}
	if !p.wclosed {
		p.wclosed, p.werr = true, err
	}
	p.changed.Broadcast()
}

// Read reads what is queued, waiting while nothing is.
func (p *bufPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.chunks) == 0 && !p.wclosed && !p.rclosed {
		p.changed.Wait()
	}
	if p.rclosed {
		return 0, io.ErrClosedPipe
	}
	if len(p.chunks) == 0 {
		return 0, p.werr
	}
	c := &p.chunks[0]
	n := copy(b, (*c.b)[c.off:])
	c.off += n
	if c.off == len(*c.b) {
		if cap(*c.b) == pipeChunk {
			pipeBuffers.Put(c.b)
		}
		p.chunks[0] = chunk{}
		p.chunks = p.chunks[1:]
	}
	p.queued -= n
	p.changed.Broadcast()
	return n, nil
}

// CloseRead ends the reads: the writer's next write fails with err, and
// what is queued is dropped.
func (p *bufPipe) CloseRead(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.rclosed {
		p.rclosed, p.rerr = true, err
	}
	p.chunks, p.queued = nil, 0
	p.changed.Broadcast()
}
