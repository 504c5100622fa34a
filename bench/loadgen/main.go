// Command loadgen drives a fixed number of keep-alive connections at one
// URL for a fixed time and prints requests/s and latency percentiles as
// JSON. bench/passthrough.sh uses it to compare two Caddy configs in the
// same run; it sends only to the address it is given (loopback there).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

func main() {
	target := flag.String("url", "", "URL to GET")
	conns := flag.Int("c", 16, "concurrent connections")
	duration := flag.Duration("d", 5*time.Second, "how long to run")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
	}
	transport := &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}

	var mu sync.Mutex
	var latencies []time.Duration
	errors := 0
	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	for range *conns {
		wg.Go(func() {
			var mine []time.Duration
			bad := 0
			for time.Now().Before(deadline) {
				start := time.Now()
				resp, err := client.Get(*target)
				if err != nil {
					bad++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					bad++
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			errors += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(float64(len(latencies)-1)*p)].Microseconds())
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"requests": len(latencies), "errors": errors,
		"rps":    float64(len(latencies)) / duration.Seconds(),
		"p50_us": pct(0.50), "p99_us": pct(0.99),
	})
}
