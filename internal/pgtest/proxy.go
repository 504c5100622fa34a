package pgtest

import (
	"fmt"
	"net"
	"net/url"
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
	// thaw is open while the proxy is frozen (see Freeze).
	thaw chan struct{}
}

// Freeze makes the database stop answering without closing anything, as
// a network partition does: open connections stay open and carry nothing,
// new ones are accepted and carry nothing, until Thaw.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.thaw == nil {
		p.thaw = make(chan struct{})
	}
}

// Thaw undoes Freeze: what was held back flows again.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.thaw != nil {
		close(p.thaw)
		p.thaw = nil
	}
}

// relay copies src to dst, holding each chunk back while frozen.
func (p *Proxy) relay(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			thaw := p.thaw
			p.mu.Unlock()
			if thaw != nil {
				<-thaw
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
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

// NewServerProxy is NewProxy to the server the tests use (ServerURL's
// host and port), so that a test whose database is on another server
// than the default one cuts that server, not 127.0.0.1:5432.
func NewServerProxy(t testing.TB) *Proxy {
	t.Helper()
	u, err := url.Parse(ServerURL())
	if err != nil {
		t.Fatalf("pgtest: %s is not a URL: %v", EnvURL, err)
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return NewProxy(t, net.JoinHostPort(u.Hostname(), port))
}

// Via is databaseURL reached through the proxy: the same user, database
// and options, with the proxy's address as the host.
func (p *Proxy) Via(t testing.TB, databaseURL string) string {
	t.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr
	return u.String()
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
			go p.relay(s, c)
			go p.relay(c, s)
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
	if p.thaw != nil { // nothing is left to hold back
		close(p.thaw)
		p.thaw = nil
	}
}
