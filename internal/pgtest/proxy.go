package pgtest

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/credgate/credgate/internal/testport"
)

// Proxy stands between a client and PostgreSQL so a test can take the
// database away and bring it back without touching the shared server,
// which other packages' tests use in parallel.
type Proxy struct {
	// Addr is where clients connect (host:port).
	Addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

// NewProxy returns a proxy to target on a free loopback port, down until
// Up is called and taken down when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	// Down until Up: the port stays unbound meanwhile, so it comes from
	// outside the kernel's ephemeral range (see testport).
	p := &Proxy{Addr: fmt.Sprintf("127.0.0.1:%d", testport.Free(t)), target: target}
	t.Cleanup(p.Down)
	return p
}

// Up starts accepting connections.
func (p *Proxy) Up(t testing.TB) {
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
}

// Down closes the listener and cuts every open connection, as a database
// restart does.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
