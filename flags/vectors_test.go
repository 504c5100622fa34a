package flags_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/credgate/credgate/flags"
)

// vectors are the bucketing test vectors published in flags/README.md, so
// that the existing app can compute the same bucket for a user.
var vectors = []struct {
	user   string
	bucket float64
}{
	{"11111111-1111-1111-1111-111111111111", 86.9634},
	{"22222222-2222-2222-2222-222222222222", 63.7840},
	{"00000000-0000-4000-8000-000000000042", 12.5841},
	{"alice", 74.1750},
	{"user-1", 59.7440},
}

func TestBucketVectors(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, v := range vectors {
		got := flags.Bucket(flags.FlagNewFlow, v.user)
		if math.Abs(got-v.bucket) > 0.00005 {
			t.Errorf("Bucket(%q) = %.4f, want %.4f", v.user, got, v.bucket)
		}
		row := fmt.Sprintf("| `%s` | %.4f |", v.user, v.bucket)
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md lacks the vector row %s", row)
		}
		// flagd itself agrees: just below the bucket the user is legacy,
		// just above it new.
		below, above := int(math.Floor(v.bucket)), int(math.Ceil(v.bucket))
		for p, want := range map[int]flags.Arm{below: flags.ArmLegacy, above: flags.ArmNew} {
			r, _ := flagdRollout(t, flagFile(true, p))
			if d := r.Decide(ctx, v.user, "twitter"); d.Arm != want {
				t.Errorf("flagd at %d%% puts %q (bucket %.4f) on %s, want %s", p, v.user, v.bucket, d.Arm, want)
			}
		}
	}
}
