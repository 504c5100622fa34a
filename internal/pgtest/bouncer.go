package pgtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/testport"
)

// Bouncer puts a PgBouncer of the test's own in transaction mode
// (pool_mode = transaction, as Supabase's pooler on 6543 and most
// self-hosted PgBouncers run) in front of databaseURL's database, and
// returns the URL that goes through it, with pooler=transaction as the
// README tells operators to write. It is stopped when the test ends.
// Without Debian's pgbouncer the test fails and says what to install.
func Bouncer(t testing.TB, databaseURL string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		// Debian installs it in /usr/sbin, which a user's PATH may lack.
		bin, err = exec.LookPath("/usr/sbin/pgbouncer")
	}
	if err != nil {
		t.Fatal("pgtest: a transaction-mode pooler needs PgBouncer (apt-get install pgbouncer; .ci/run does it)")
	}
	target, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	host, port, err := net.SplitHostPort(target.Host)
	if err != nil {
		host, port = target.Host, "5432"
	}
	dbname := target.Path[1:]
	listen := testport.Free(t)
	dir, err := os.MkdirTemp("", "pgtest-bouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	userName := target.User.Username()
	ini := fmt.Sprintf(`[databases]
%s = host=%s port=%s dbname=%s user=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
server_reset_query =
logfile = %s
pidfile = %s
`, dbname, host, port, dbname, userName, listen, filepath.Join(dir, "userlist.txt"),
		filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"))
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(fmt.Sprintf("%q \"\"\n", userName)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	// PgBouncer refuses to run as root: as root (CI), it runs as the
	// postgres user, like the throwaway clusters. It is started as that
	// user directly, not through runuser: runuser does not pass on the
	// stop signal, and a PgBouncer left behind by every test that used
	// one (five per `make test`) kept its port and its server
	// connections after the test.
	if os.Getuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgtest: running PgBouncer as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		for _, f := range []string{dir, filepath.Join(dir, "pgbouncer.ini"), filepath.Join(dir, "userlist.txt")} {
			if err := os.Chown(f, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("pgtest: starting PgBouncer: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "pgbouncer.log")); err == nil {
				t.Logf("PgBouncer's log:\n%s", b)
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", listen), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgtest: PgBouncer did not listen within 10 s: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	through := *target
	through.Host = fmt.Sprintf("127.0.0.1:%d", listen)
	q := through.Query()
	q.Set("pooler", "transaction")
	through.RawQuery = q.Encode()
	return through.String()
}
