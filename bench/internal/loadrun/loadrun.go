// Package loadrun is what the bench drivers share: run one unit of work
// (a whole connect, a token read, a bare SELECT) from concurrent workers
// for a fixed time or count, and print one JSON line with its rate,
// latency percentiles and the CPU named processes spent per unit; then
// summarize the lines of alternating rounds as medians and as ratios
// against a baseline measured in the same run, because absolute figures on
// a shared two-core machine mean little.
package loadrun

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one measured round of one label. A "flow" is the unit of
// work, whatever it is (Unit names it: flows, reads).
type Result struct {
	Label       string             `json:"label,omitempty"`
	Unit        string             `json:"unit,omitempty"`
	Flows       int64              `json:"flows"`
	Failed      int64              `json:"failed"`
	FirstError  string             `json:"first_error,omitempty"`
	FlowsPerSec float64            `json:"flows_per_s"`
	P50ms       float64            `json:"p50_ms"`
	P99ms       float64            `json:"p99_ms"`
	Concurrency int                `json:"c"`
	CPUms       map[string]float64 `json:"cpu_ms_per_flow,omitempty"`
	// RSSMB is each meter's resident memory at the end of the round, for
	// the meters that name one process.
	RSSMB map[string]float64 `json:"rss_mb,omitempty"`
	// BehindMs, for work on a schedule (renewals due at a spread of
	// times), is how far behind the schedule the last one finished.
	BehindMs float64 `json:"behind_ms,omitempty"`
	// WALKBPerFlow is the write-ahead log PostgreSQL wrote per flow (the
	// whole cluster's, so the run should have it to itself), and
	// Checkpoints how many checkpoints began during the round: a commit
	// waits for its WAL to reach the disk, and after a checkpoint each
	// page's first change logs the whole page.
	WALKBPerFlow float64 `json:"wal_kb_per_flow,omitempty"`
	// FPIPerFlow is how many of those records were whole pages.
	FPIPerFlow  float64 `json:"fpi_per_flow,omitempty"`
	Checkpoints *int64  `json:"checkpoints,omitempty"`
}

// Measure runs run from conc workers for dur (or, with flows > 0, that
// many times in all) and reads the meters' CPU around it.
func Measure(run func() error, conc int, dur time.Duration, flows int64, meters []CPUMeter) Result {
	before := ReadCPU(meters)
	var ok, failed, taken atomic.Int64
	var firstErr atomic.Value
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(dur)
	more := func() bool {
		if flows > 0 {
			return taken.Add(1) <= flows
		}
		return time.Now().Before(deadline)
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var mine []time.Duration
			for more() {
				t := time.Now()
				if err := run(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	after := ReadCPU(meters)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	r := Result{Flows: ok.Load(), Failed: failed.Load(), FlowsPerSec: float64(ok.Load()) / elapsed.Seconds(),
		P50ms: pct(0.5), P99ms: pct(0.99), Concurrency: conc}
	if e, _ := firstErr.Load().(string); e != "" {
		r.FirstError = e
	}
	if len(meters) > 0 && r.Flows > 0 {
		r.CPUms = map[string]float64{}
		for i, m := range meters {
			r.CPUms[m.name] = CPUPerFlow(before[i], after[i], r.Flows)
			if m.pid != 0 {
				if r.RSSMB == nil {
					r.RSSMB = map[string]float64{}
				}
				r.RSSMB[m.name] = rssMB(m.pid)
			}
		}
	}
	return r
}

// rssMB is VmRSS from /proc/<pid>/status, in MB (0 when unreadable).
func rssMB(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return round3(kb / 1024)
		}
	}
	return 0
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// CPUPerFlow is the CPU milliseconds per flow between two ReadCPU
// readings of one meter.
func CPUPerFlow(before, after, flows int64) float64 {
	if flows <= 0 {
		return 0
	}
	return round3(float64(after-before) / clockTicks * 1000 / float64(flows))
}

// ---- the summary ----

// SummarizeFile prints, per label in the order first seen, the median
// flows/s with the range of the rounds, the median CPU per flow, and the
// ratio of medians against the baseline, with the range of the per-round
// ratios (round i of a label against round i of the baseline: the rounds
// alternate, so a pair ran on the same machine minutes apart).
func SummarizeFile(path, baseline string, w io.Writer) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	byLabel := map[string][]Result{}
	var order []string
	for line := range strings.Lines(string(raw)) {
		var r Result
		if json.Unmarshal([]byte(line), &r) != nil || r.Concurrency == 0 {
			continue // not a result line
		}
		if _, seen := byLabel[r.Label]; !seen {
			order = append(order, r.Label)
		}
		byLabel[r.Label] = append(byLabel[r.Label], r)
	}
	if len(order) == 0 {
		return fmt.Errorf("%s: no result lines", path)
	}
	base := byLabel[baseline]
	for _, label := range order {
		rs := byLabel[label]
		unit := cmp.Or(rs[0].Unit, "flows")
		fps := make([]float64, len(rs))
		p99 := make([]float64, len(rs))
		for i, r := range rs {
			fps[i], p99[i] = r.FlowsPerSec, r.P99ms
		}
		fmt.Fprintf(w, "%-22s %6.0f %s/s (rounds %s, in order %s: %.1f %% apart)", label, median(fps), unit, span(fps, "%.0f"),
			inOrder(fps, "%.0f"), apart(fps))
		if median(p99) > 0 {
			fmt.Fprintf(w, "  p99 %.2f ms", median(p99))
		}
		behind := make([]float64, len(rs))
		for i, r := range rs {
			behind[i] = r.BehindMs
		}
		if median(behind) > 0 {
			fmt.Fprintf(w, "  %.0f ms behind the schedule (rounds %s)", median(behind), span(behind, "%.0f"))
		}
		wal := make([]float64, len(rs))
		var checkpoints []string
		for i, r := range rs {
			wal[i] = r.WALKBPerFlow
			if r.Checkpoints != nil {
				checkpoints = append(checkpoints, fmt.Sprint(*r.Checkpoints))
			}
		}
		if median(wal) > 0 {
			fpi := make([]float64, len(rs))
			for i, r := range rs {
				fpi[i] = r.FPIPerFlow
			}
			fmt.Fprintf(w, "  WAL %.1f KB/%s (rounds %s), full pages %.2f (rounds %s)", median(wal), strings.TrimSuffix(unit, "s"),
				span(wal, "%.1f"), median(fpi), span(fpi, "%.2f"))
		}
		if len(checkpoints) > 0 {
			fmt.Fprintf(w, "  checkpoints %s", strings.Join(checkpoints, " "))
		}
		for _, name := range slices.Sorted(maps.Keys(rs[0].CPUms)) {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = r.CPUms[name]
			}
			fmt.Fprintf(w, "  cpu %s %.3f ms/%s", name, median(v), strings.TrimSuffix(unit, "s"))
		}
		for _, name := range slices.Sorted(maps.Keys(rs[0].RSSMB)) {
			v := make([]string, len(rs))
			for i, r := range rs {
				v[i] = fmt.Sprintf("%.0f", r.RSSMB[name])
			}
			fmt.Fprintf(w, "  rss %s %s MB", name, strings.Join(v, " → "))
		}
		if len(base) > 0 && label != baseline {
			var pairs []float64
			for i := range min(len(rs), len(base)) {
				pairs = append(pairs, rs[i].FlowsPerSec/base[i].FlowsPerSec)
			}
			bfps := make([]float64, len(base))
			bp99 := make([]float64, len(base))
			for i, r := range base {
				bfps[i], bp99[i] = r.FlowsPerSec, r.P99ms
			}
			fmt.Fprintf(w, "  = %.2fx %s (per round %s)", median(fps)/median(bfps), baseline, span(pairs, "%.2f"))
			if median(p99) > 0 && median(bp99) > 0 {
				fmt.Fprintf(w, ", p99 %.2fx", median(p99)/median(bp99))
			}
		}
		var failed int64
		for _, r := range rs {
			failed += r.Failed
		}
		if failed > 0 {
			fmt.Fprintf(w, "  FAILED %d", failed)
		}
		fmt.Fprintln(w)
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func span(v []float64, format string) string {
	return fmt.Sprintf(format+"–"+format, slices.Min(v), slices.Max(v))
}

// inOrder lists the rounds as they ran, so that a rate falling (or
// rising) round after round shows.
func inOrder(v []float64, format string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, " → ")
}

// apart is how far apart the rounds are: the largest less the smallest,
// as a percentage of the smallest ("three rounds within 5 % of each
// other" is apart ≤ 5).
func apart(v []float64) float64 {
	lo := slices.Min(v)
	if lo <= 0 {
		return 0
	}
	return (slices.Max(v) - lo) / lo * 100
}

// ---- CPU accounting from /proc ----

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc/<pid>/stat.
const clockTicks = 100

// CPUMeter names a process whose CPU a round reports per unit.
type CPUMeter struct {
	name string
	pid  int // 0: every process named postgres
}

// Name is the meter's name, as -cpu gave it.
func (m CPUMeter) Name() string { return m.name }

// ParseCPU reads -cpu's name=pid,… (pid may be a pid file; name=postgres
// sums every process named postgres; name=self is the driver itself).
func ParseCPU(spec string) ([]CPUMeter, error) {
	var out []CPUMeter
	for item := range strings.SplitSeq(spec, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, pidText, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("-cpu %q: want name=pid", item)
		}
		if pidText == "postgres" {
			out = append(out, CPUMeter{name: name})
			continue
		}
		if pidText == "self" { // the driver itself: a floor's client
			out = append(out, CPUMeter{name: name, pid: os.Getpid()})
			continue
		}
		if raw, err := os.ReadFile(pidText); err == nil { // a pid file
			pidText = strings.TrimSpace(string(raw))
		}
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("-cpu %q: %q is neither a pid nor a pid file", item, pidText)
		}
		out = append(out, CPUMeter{name: name, pid: pid})
	}
	return out, nil
}

// ReadCPU returns each meter's CPU in clock ticks; for postgres, the sum
// over every process of that name (backends, walwriter, checkpointer:
// all of it is the database's cost).
func ReadCPU(meters []CPUMeter) []int64 {
	out := make([]int64, len(meters))
	for i, m := range meters {
		if m.pid != 0 {
			out[i] = procTicks(m.pid)
			continue
		}
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			if comm, err := os.ReadFile(d + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "postgres" {
				pid, _ := strconv.Atoi(filepath.Base(d))
				out[i] += procTicks(pid)
			}
		}
	}
	return out
}

// procTicks reads utime, stime, cutime and cstime (fields 14 to 17) of
// /proc/<pid>/stat: the children's share counts the autovacuum workers
// and backends that ended within the window, whose time the postmaster
// reaped. The command name before them may hold spaces, so fields are
// counted from the closing parenthesis.
func procTicks(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0
	}
	var sum int64
	for _, field := range f[11:15] {
		n, _ := strconv.ParseInt(field, 10, 64)
		sum += n
	}
	return sum
}
