package pgtest_test

import (
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
)

// A test's PgBouncer ends with its test. As root it ran under runuser,
// which did not pass the stop signal on: every one was left running,
// holding its port and its server connections (five per `make test`,
// and a smoke run later failed to bind a port one of them held).
func TestABouncerStopsWithItsTest(t *testing.T) {
	var addr string
	t.Run("with a bouncer", func(t *testing.T) {
		u, err := url.Parse(pgtest.Bouncer(t, pgtest.Database(t)))
		if err != nil {
			t.Fatal(err)
		}
		addr = u.Host
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("the bouncer does not listen on %s: %v", addr, err)
		}
		c.Close()
	})
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("PgBouncer still listens on %s after its test ended", addr)
	}
}
