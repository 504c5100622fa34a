package caddymodule

import (
	"strings"
	"testing"
)

func TestParseStartLimit(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "10/1m", "1/1s", "off", "100/1h"} {
		if _, err := parseStartLimit(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	if l, _ := parseStartLimit("off"); l != nil {
		t.Error("off still limits")
	}
	for _, bad := range []string{"10", "0/1m", "-1/1m", "x/1m", "10/forever", "10/0s", "10/-1m"} {
		if _, err := parseStartLimit(bad); err == nil || !strings.Contains(err.Error(), "start_limit") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
