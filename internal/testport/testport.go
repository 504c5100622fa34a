// Package testport hands tests a free TCP port that nothing else will
// take before the test binds it.
//
// The usual trick, listening on port 0 and closing, returns a port from
// the kernel's ephemeral range (32768–60999 on Linux), which the kernel
// also hands out as the local port of every outgoing connection: between
// the close and the test's own bind, a database or HTTP client connection
// of a parallel test can take it ("address already in use"). Ports below
// that range are never given out by the kernel, so only another test
// choosing at random could collide, and Free checks that none has.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// given holds the ports Free has handed out in this process.
var given sync.Map

// The range Free picks from: below Linux's ephemeral range, above the
// ports services usually take.
const (
	low  = 20000
	high = 32000
)

// Free returns a port that is free on every interface (Caddy binds
// ":port") as well as on loopback.
//
// A port is handed out once per process: two calls before either port is
// bound (a harness picking its sites' ports) would otherwise find the
// same port free twice.
func Free(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := low + rand.IntN(high-low)
		if _, taken := given.LoadOrStore(port, true); taken {
			continue
		}
		if free(port) {
			return port
		}
	}
	t.Fatal("testport: no free port found")
	return 0
}

func free(port int) bool {
	for _, addr := range []string{fmt.Sprintf(":%d", port), fmt.Sprintf("127.0.0.1:%d", port)} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}
