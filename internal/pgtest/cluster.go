package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/internal/testport"
	"github.com/credgate/credgate/migrations"
)

// Cluster is a throwaway PostgreSQL server of a test's own (initdb and
// pg_ctl from the machine's PostgreSQL packages, on a free loopback
// port), for faults the shared server must not suffer: a fast restart
// that ends every session with 57P01, a crash. It is removed when the
// test ends. Without PostgreSQL's server binaries the test fails and says
// which package to install.
type Cluster struct {
	// URL is a migrated database in the cluster.
	URL  string
	dir  string
	bin  string
	port int
}

// NewCluster initialises and starts a cluster and migrates a database in
// it.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		t.Fatal("pgtest: a throwaway cluster needs PostgreSQL's server binaries (apt-get install postgresql)")
	}
	sort.Strings(found)
	c := &Cluster{bin: filepath.Dir(found[len(found)-1]), port: testport.Free(t)}
	dir, err := os.MkdirTemp("", "pgtest-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	t.Cleanup(func() {
		c.pgctl("stop", "-m", "immediate")
		os.RemoveAll(dir)
	})
	// initdb and postgres refuse to run as root: as root (CI), the
	// cluster belongs to the postgres user.
	if os.Getuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgtest: running as root needs the postgres user for a throwaway cluster: %v", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := c.run(filepath.Join(c.bin, "initdb"), "-D", c.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8"); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	c.Start(t)
	admin := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: the throwaway cluster does not answer: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE credgate"); err != nil {
		t.Fatal(err)
	}
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/credgate?sslmode=disable", c.port)
	if _, err := migrations.Up(ctx, c.URL); err != nil {
		t.Fatalf("pgtest: migrating the throwaway cluster: %v", err)
	}
	return c
}

// Addr is the cluster's host:port, for a Proxy in front of it.
func (c *Cluster) Addr() string { return fmt.Sprintf("127.0.0.1:%d", c.port) }

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// Start starts the cluster (it is started by NewCluster).
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if out, err := c.pgctl("start", "-w", "-l", filepath.Join(c.dir, "log"),
		"-o", fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s", c.port, c.dir)); err != nil {
		t.Fatalf("pgtest: starting the throwaway cluster: %v\n%s", err, out)
	}
}

// Restart is `pg_ctl restart -m fast`: every session ends with 57P01,
// new connections are refused until the server is back.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if out, err := c.pgctl("restart", "-w", "-m", "fast", "-l", filepath.Join(c.dir, "log"),
		"-o", fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s", c.port, c.dir)); err != nil {
		t.Fatalf("pgtest: restarting the throwaway cluster: %v\n%s", err, out)
	}
}

func (c *Cluster) pgctl(args ...string) ([]byte, error) {
	return c.run(filepath.Join(c.bin, "pg_ctl"), append([]string{"-D", c.data()}, args...)...)
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	if os.Getuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return cmd.CombinedOutput()
}
