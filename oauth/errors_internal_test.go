package oauth

import (
	"errors"
	"net"
	"testing"
)

// asError relabels a copy: the error the caller passed keeps its Op.
func TestAsErrorDoesNotChangeItsArgument(t *testing.T) {
	p := &Provider{profile: Profile{Name: "twitter"}}
	orig := newError("twitter", "exchange", CodeInvalidGrant, 400, "bad code")
	got := p.asError("refresh", orig)
	if orig.Op != "exchange" {
		t.Fatalf("asError changed its argument: Op %q", orig.Op)
	}
	if got.Op != "refresh" || got.Code != CodeInvalidGrant {
		t.Fatalf("asError: %+v", got)
	}
}

// A provider's text that mentions a refused connection is not a refused
// connection: only the errno says so.
func TestTransportProblemMatchesTheErrnoNotTheText(t *testing.T) {
	if got := transportProblem(errors.New("upstream said: connection refused")); got == "connection refused" {
		t.Fatalf("matched on the text: %q", got)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = net.Dial("tcp", addr)
	if got := transportProblem(err); got != "connection refused" {
		t.Fatalf("a refused dial: %q (%v)", got, err)
	}
}
