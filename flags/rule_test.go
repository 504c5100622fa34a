package flags_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgate/credgate/flags"
)

// ruleFile is a flag file whose oauth-new-flow has the given targeting
// ("" for none) and defaultVariant.
func ruleFile(targeting, defaultVariant string) string {
	t := ""
	if targeting != "" {
		t = `, "targeting": ` + targeting
	}
	return `{"flags": {
		"oauth-new-flow-enabled": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
		"oauth-new-flow": {"state": "ENABLED", "variants": {"new": "new", "legacy": "legacy"}, "defaultVariant": "` + defaultVariant + `"` + t + `}}}`
}

// inForce runs FileInForce for one platform.
func inForce(t *testing.T, file, platform string) flags.InForce {
	t.Helper()
	list, err := flags.FileInForce(context.Background(), []byte(file), []string{platform})
	if err != nil {
		t.Fatalf("FileInForce: %v\n%s", err, file)
	}
	return list[0]
}

// The example is written back byte for byte: the layout Marshal writes
// is the example's own, so `rollout set` changes only the numbers. A
// file laid out otherwise keeps its keys' order and every value.
func TestFlagSetWritesAFileBackAsItWas(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile("flags.example.json")
	if err != nil {
		t.Fatal(err)
	}
	set, err := flags.ParseFlagSet(example)
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Marshal(); !bytes.Equal(got, example) {
		t.Fatalf("the example, written back:\n%s", got)
	}

	compact := `{"flags":{"zeta":{"state":"ENABLED","variants":{"b":1.50,"a":2e3},"defaultVariant":"b","metadata":{"url":"https://x.example/?a=1&b=<2>"}},` +
		`"oauth-new-flow":{"state":"ENABLED","variants":{"new":"new","legacy":"legacy"},"defaultVariant":"legacy"}},` +
		`"$evaluators":{"shared":{"in":["x",["x"]]}},"metadata":{"owner":"team-é"},"$schema":"https://flagd.dev/schema/v0/flags.json"}`
	set, err = flags.ParseFlagSet([]byte(compact))
	if err != nil {
		t.Fatal(err)
	}
	out := set.Marshal()
	var a, b any
	if json.Unmarshal([]byte(compact), &a) != nil || json.Unmarshal(out, &b) != nil || !reflect.DeepEqual(a, b) {
		t.Fatalf("values changed:\n%s", out)
	}
	// The keys in their written order, numbers as written, no HTML escapes.
	order := []string{`"zeta"`, `"b": 1.50`, `"a": 2e3`, `"url": "https://x.example/?a=1&b=<2>"`, `"oauth-new-flow"`, `"$evaluators"`, `"metadata": { "owner": "team-é" }`, `"$schema"`}
	last := -1
	for _, s := range order {
		i := strings.Index(string(out), s)
		if i <= last {
			t.Fatalf("%s is not where it was written:\n%s", s, out)
		}
		last = i
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if indent := len(line) - len(strings.TrimLeft(line, " ")); indent%2 != 0 {
			t.Fatalf("indentation is not two spaces a level:\n%s", out)
		}
	}

	for _, bad := range []struct{ file, says string }{
		{`{"flags": {`, "not valid JSON"},
		{"{\n\"flags\": {},\n}", "line 3"},
		{`[]`, "a JSON array"},
		{`{"flag": {}}`, `no "flags" object`},
		{`{"flags": []}`, `"flags" is a JSON array`},
		{`{"flags": {}} {}`, "not valid JSON"},
	} {
		if _, err := flags.ParseFlagSet([]byte(bad.file)); err == nil || !strings.Contains(err.Error(), bad.says) {
			t.Errorf("%q: %v, want %q", bad.file, err, bad.says)
		}
	}
}

// The percentage is read from the rule, exactly: 25 is 25.0, not the
// 24.4 % that 1,000 sample ids gave. For each rule the exact figure is
// checked against flagd's own evaluation of 1,000 users.
func TestFileInForceReadsTheRule(t *testing.T) {
	t.Parallel()
	fr := func(n, l int) string { return fmt.Sprintf(`{"fractional": [["new", %d], ["legacy", %d]]}`, n, l) }
	for _, tc := range []struct {
		name, file string
		platform   string
		percent    float64
		killOn     bool
	}{
		{"a split at 25", ruleFile(fr(25, 75), "legacy"), "twitter", 25, true},
		{"weights 1:3", ruleFile(fr(1, 3), "legacy"), "twitter", 25, true},
		{"weights for 2.5 %", ruleFile(fr(25, 975), "legacy"), "facebook", 2.5, true},
		{"an if on the platform, its branch", ruleFile(`{"if": [{"==": [{"var": "platform"}, "linkedin"]}, `+fr(0, 100)+`, `+fr(25, 75)+`]}`, "legacy"), "linkedin", 0, true},
		{"an if on the platform, the else", ruleFile(`{"if": [{"==": [{"var": "platform"}, "linkedin"]}, `+fr(0, 100)+`, `+fr(25, 75)+`]}`, "legacy"), "twitter", 25, true},
		{"in a list", ruleFile(`{"if": [{"in": [{"var": ["platform"]}, ["facebook", "instagram"]]}, `+fr(40, 60)+`, `+fr(10, 90)+`]}`, "legacy"), "instagram", 40, true},
		{"not equal, a variant", ruleFile(`{"if": [{"!=": [{"var": "platform"}, "twitter"]}, `+fr(30, 70)+`, "new"]}`, "legacy"), "twitter", 100, true},
		{"an if without else falls to the default", ruleFile(`{"if": [{"==": ["linkedin", {"var": "platform"}]}, `+fr(50, 50)+`]}`, "legacy"), "twitter", 0, true},
		{"nested ifs, and/or/!", ruleFile(`{"if": [{"or": [{"==": [{"var": "platform"}, "x"]}, {"!": {"==": [{"var": "platform"}, "twitter"]}}]}, "legacy", {"if": [{"and": [true, {"in": ["twit", {"var": "platform"}]}]}, `+fr(60, 40)+`]}]}`, "legacy"), "twitter", 60, true},
		{"no targeting, default new", ruleFile("", "new"), "twitter", 100, true},
		{"no targeting, default legacy", ruleFile("{}", "legacy"), "twitter", 0, true},
		{"the kill switch off", strings.Replace(ruleFile(fr(50, 50), "legacy"), `"defaultVariant": "on"`, `"defaultVariant": "off"`, 1), "twitter", 50, false},
		{"the kill switch off for one platform", strings.Replace(ruleFile(fr(50, 50), "legacy"), `"defaultVariant": "on"`,
			`"defaultVariant": "on", "targeting": {"if": [{"==": [{"var": "platform"}, "linkedin"]}, "off"]}`, 1), "linkedin", 50, false},
	} {
		got := inForce(t, tc.file, tc.platform)
		if got.Measured != flags.MeasuredRule || got.NewPercent != tc.percent || got.KillSwitchOn != tc.killOn || !got.Ready || got.Problem != "" || got.Samples != 0 {
			t.Errorf("%s: %+v, want %v %% (kill switch on: %v) from the rule", tc.name, got, tc.percent, tc.killOn)
			continue
		}
		r, _ := flagdRollout(t, tc.file)
		measured := r.InForce(context.Background(), tc.platform, 1000)
		if d := measured.NewPercent - tc.percent; d < -4 || d > 4 || measured.Samples != 1000 || measured.KillSwitchOn != tc.killOn {
			t.Errorf("%s: flagd measures %+v, the rule says %v %%", tc.name, measured, tc.percent)
		}
	}

	for _, tc := range []struct{ name, file, problem string }{
		{"disabled", strings.Replace(ruleFile("", "new"), `"state": "ENABLED", "variants": {"new"`, `"state": "DISABLED", "variants": {"new"`, 1), "oauth-new-flow: flag_disabled"},
		{"no new-flow flag", `{"flags": {"oauth-new-flow-enabled": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}`, "oauth-new-flow: flag_not_found"},
		{"no kill switch", `{"flags": {}}`, "oauth-new-flow-enabled: flag_not_found"},
	} {
		if got := inForce(t, tc.file, "twitter"); got.Problem != tc.problem {
			t.Errorf("%s: %+v, want the problem %q", tc.name, got, tc.problem)
		}
	}
}

// A rule whose answer depends on more than the platform is measured the
// way decisions are made, with flagd's engine on the same sample ids as
// a provider's Rollout.InForce, and says so and why. Nothing is logged.
func TestFileInForceSamplesWhatTheRuleCannotSay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, targeting, why string }{
		{"a condition on another attribute", `{"if": [{"==": [{"var": "email"}, "a@b.c"]}, "new", {"fractional": [["new", 25], ["legacy", 75]]}]}`, `{ "var": "email" }`},
		{"a split on another key", `{"fractional": [{"var": "targetingKey"}, ["new", 25], ["legacy", 75]]}`, "buckets by"},
		{"a shared evaluator", `{"$ref": "shared"}`, `"$ref"`},
	} {
		file := ruleFile(tc.targeting, "legacy")
		if tc.name == "a shared evaluator" {
			file = strings.Replace(file, `{"flags": {`, `{"$evaluators": {"shared": {"fractional": [["new", 25], ["legacy", 75]]}}, "flags": {`, 1)
		}
		got := inForce(t, file, "twitter")
		r, _ := flagdRollout(t, file)
		want := r.InForce(context.Background(), "twitter", 1000)
		if got.Measured != flags.MeasuredSampled || got.Samples != 1000 || !strings.Contains(got.Note, tc.why) ||
			got.NewPercent != want.NewPercent || got.KillSwitchOn != want.KillSwitchOn || got.Problem != "" {
			t.Errorf("%s: %+v, want sampled as flagd does (%+v), noting %q", tc.name, got, want, tc.why)
		}
	}
	if _, err := flags.FileInForce(context.Background(), []byte(`{"flags": {"x": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "b"}}}`), []string{"twitter"}); err == nil ||
		!strings.Contains(err.Error(), "flagd") {
		t.Errorf("a file flagd refuses: %v", err)
	}
}

// readSet parses file, applies SetNewPercent and returns the result.
func readSet(t *testing.T, file string, percent float64, platform string) (string, error) {
	t.Helper()
	set, err := flags.ParseFlagSet([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if err := set.SetNewPercent(percent, platform); err != nil {
		return "", err
	}
	out := set.Marshal()
	if err := flags.CheckFlagSet(out); err != nil {
		t.Fatalf("the result does not load: %v\n%s", err, out)
	}
	return string(out), nil
}

// percents is each platform's percentage in file, from the rule.
func percents(t *testing.T, file string, platforms ...string) map[string]float64 {
	t.Helper()
	list, err := flags.FileInForce(context.Background(), []byte(file), platforms)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range list {
		if f.Measured != flags.MeasuredRule {
			t.Fatalf("%s sampled: %+v\n%s", f.Platform, f, file)
		}
		out[f.Platform] = f.NewPercent
	}
	return out
}

var four = []string{"facebook", "instagram", "linkedin", "twitter"}

// The shipped example is where a rollout starts, the runbook's first
// step: every platform, LinkedIn's own branch included, at 0 % (issue 26,
// item 3: a copy of it put in force must move nobody).
func TestTheExampleMovesNobody(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile("flags.example.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := percents(t, string(example), four...); !reflect.DeepEqual(got, map[string]float64{"facebook": 0, "instagram": 0, "linkedin": 0, "twitter": 0}) {
		t.Fatalf("the example puts %v in force, want 0 %% everywhere", got)
	}
}

// SetNewPercent moves every branch, LinkedIn's own included, changing
// nothing else in the file; with a platform, only that one, in its own
// branch, added in front when it shares one.
func TestSetNewPercentChangesEveryBranchOrOnePlatformsOwn(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile("flags.example.json")
	if err != nil {
		t.Fatal(err)
	}
	out, err := readSet(t, string(example), 50, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.ReplaceAll(string(example), `[ "new", 0 ], [ "legacy", 100 ]`, `[ "new", 50 ], [ "legacy", 50 ]`); out != want {
		t.Fatalf("more than the percentages changed:\n%s", out)
	}
	if got := percents(t, out, four...); !reflect.DeepEqual(got, map[string]float64{"facebook": 50, "instagram": 50, "linkedin": 50, "twitter": 50}) {
		t.Fatalf("after set 50: %v", got)
	}

	// One platform that shares the else branch: a branch of its own.
	out, err = readSet(t, out, 10, "twitter")
	if err != nil {
		t.Fatal(err)
	}
	if got := percents(t, out, four...); !reflect.DeepEqual(got, map[string]float64{"facebook": 50, "instagram": 50, "linkedin": 50, "twitter": 10}) {
		t.Fatalf("after set 10 twitter: %v\n%s", got, out)
	}
	if !strings.Contains(out, `"if": [
          { "==": [ { "var": "platform" }, "twitter" ] },
          { "fractional": [ [ "new", 10 ], [ "legacy", 90 ] ] },
          { "==": [ { "var": "platform" }, "linkedin" ] },`) {
		t.Fatalf("twitter's branch is not in front:\n%s", out)
	}
	// One with a branch of its own: changed where it is.
	out2, err := readSet(t, out, 5, "linkedin")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out2, `"==":`) != 2 || strings.Replace(out, `[ "new", 50 ], [ "legacy", 50 ] ] },
          { "fractional": [ [ "new", 50 ]`, `[ "new", 5 ], [ "legacy", 95 ] ] },
          { "fractional": [ [ "new", 50 ]`, 1) != out2 {
		t.Fatalf("linkedin's own branch was not changed in place:\n%s", out2)
	}

	fr := func(n, l int) string { return fmt.Sprintf(`{"fractional": [["new", %d], ["legacy", %d]]}`, n, l) }
	for _, tc := range []struct {
		name, file, platform string
		percent              float64
		want                 map[string]float64
	}{
		{"no targeting", ruleFile("", "legacy"), "", 30, map[string]float64{"facebook": 30, "instagram": 30, "linkedin": 30, "twitter": 30}},
		{"no targeting, one platform", ruleFile("", "legacy"), "linkedin", 30, map[string]float64{"facebook": 0, "instagram": 0, "linkedin": 30, "twitter": 0}},
		{"no targeting, default new, one platform", ruleFile("", "new"), "linkedin", 30, map[string]float64{"facebook": 100, "instagram": 100, "linkedin": 30, "twitter": 100}},
		{"a split, one platform", ruleFile(fr(25, 75), "legacy"), "facebook", 75, map[string]float64{"facebook": 75, "instagram": 25, "linkedin": 25, "twitter": 25}},
		{"a shared in-branch, one platform", ruleFile(`{"if": [{"in": [{"var": "platform"}, ["facebook", "instagram"]]}, `+fr(40, 60)+`, `+fr(10, 90)+`]}`, "legacy"), "facebook", 45,
			map[string]float64{"facebook": 45, "instagram": 40, "linkedin": 10, "twitter": 10}},
		{"an if without else", ruleFile(`{"if": [{"==": [{"var": "platform"}, "linkedin"]}, "legacy"]}`, "legacy"), "", 20, map[string]float64{"facebook": 20, "instagram": 20, "linkedin": 20, "twitter": 20}},
		{"nested ifs and variants", ruleFile(`{"if": [{"==": [{"var": "platform"}, "x"]}, "new", {"if": [{"==": [{"var": "email"}, "a"]}, null, `+fr(1, 99)+`]}]}`, "legacy"), "", 2.5,
			map[string]float64{"facebook": 2.5, "instagram": 2.5, "linkedin": 2.5, "twitter": 2.5}},
		{"down to 0", ruleFile(fr(100, 0), "legacy"), "", 0, map[string]float64{"facebook": 0, "instagram": 0, "linkedin": 0, "twitter": 0}},
	} {
		out, err := readSet(t, tc.file, tc.percent, tc.platform)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := percents(t, out, four...); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v\n%s", tc.name, got, tc.want, out)
		}
		var before, after struct {
			Flags map[string]json.RawMessage `json:"flags"`
		}
		json.Unmarshal([]byte(tc.file), &before)
		json.Unmarshal([]byte(out), &after)
		var a, b any
		json.Unmarshal(before.Flags[flags.FlagEnabled], &a)
		json.Unmarshal(after.Flags[flags.FlagEnabled], &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: the kill switch changed:\n%s", tc.name, out)
		}
	}
}

// What cannot be changed without guessing is refused, naming what was
// found, and the flag set is left as it was.
func TestSetNewPercentRefusesWhatItCannotChangeSafely(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file string
		percent    float64
		platform   string
		says       string
	}{
		{"above 100", ruleFile("", "legacy"), 101, "", "from 0 to 100"},
		{"below 0", ruleFile("", "legacy"), -1, "", "from 0 to 100"},
		{"three decimals", ruleFile("", "legacy"), 2.125, "", "more than two decimals"},
		{"legacy first", ruleFile(`{"fractional": [["legacy", 75], ["new", 25]]}`, "legacy"), 50, "", `[ [ "legacy", 75 ], [ "new", 25 ] ]`},
		{"three variants", ruleFile(`{"fractional": [["new", 25], ["legacy", 70], ["legacy", 5]]}`, "legacy"), 50, "", "credgate writes only"},
		{"a split on another key", ruleFile(`{"fractional": [{"var": "email"}, ["new", 25], ["legacy", 75]]}`, "legacy"), 50, "", `buckets by { "var": "email" }`},
		{"another rule", ruleFile(`{"cat": ["new"]}`, "legacy"), 50, "", `a "cat" rule`},
		{"another variant", ruleFile(`{"if": [{"==": [{"var": "platform"}, "x"]}, "beta", "legacy"]}`, "legacy"), 50, "", `the variant "beta"`},
		{"a number as a branch", ruleFile(`{"if": [{"==": [{"var": "platform"}, "x"]}, 3, "legacy"]}`, "legacy"), 50, "", "gives 3"},
		{"no new-flow flag", `{"flags": {}}`, 50, "", "no oauth-new-flow flag"},
		{"arms missing", strings.Replace(ruleFile("", "legacy"), `"legacy": "legacy"`, `"old": "old"`, 1), 50, "", `one whose value is "legacy"`},
		{"one platform behind a condition on another attribute", ruleFile(`{"if": [{"==": [{"var": "email"}, "a"]}, "new", "legacy"]}`, "legacy"), 50, "twitter", `cannot tell which rule twitter follows now`},
		{"one platform, its own branch legacy first", ruleFile(`{"if": [{"==": [{"var": "platform"}, "twitter"]}, {"fractional": [["legacy", 1], ["new", 1]]}, "legacy"]}`, "legacy"), 50, "twitter", "the branch for twitter"},
	} {
		set, err := flags.ParseFlagSet([]byte(tc.file))
		if err != nil {
			t.Fatal(err)
		}
		before := set.Marshal()
		err = set.SetNewPercent(tc.percent, tc.platform)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.says)
		}
		if after := set.Marshal(); err != nil && tc.platform == "" && !bytes.Equal(before, after) && !strings.Contains(tc.name, "branch") {
			t.Errorf("%s: refused but changed:\n%s", tc.name, after)
		}
	}
}

// WriteFile replaces the file by a rename: a reader polling it, as
// credgate's does every 250 ms, sees the old content or the new and
// never a part; the mode is kept and nothing is left beside it.
func TestWriteFileIsAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "flags.json")
	// Large enough that a write in place would be seen half done.
	pad := strings.Repeat("x", 256<<10)
	contents := [2]string{
		`{"flags": {}, "metadata": {"pad": "a` + pad + `"}}` + "\n",
		`{"flags": {}, "metadata": {"pad": "b` + pad + `"}}` + "\n",
	}
	if err := os.WriteFile(path, []byte(contents[0]), 0o640); err != nil {
		t.Fatal(err)
	}
	var reads, torn atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(path)
			reads.Add(1)
			if err != nil || (string(data) != contents[0] && string(data) != contents[1]) {
				torn.Add(1)
			}
		}
	})
	before, _ := os.Stat(path)
	deadline := time.Now().Add(5 * time.Second)
	for i := 1; i <= 200 && time.Now().Before(deadline); i++ {
		if err := flags.WriteFile(path, []byte(contents[i%2])); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if torn.Load() != 0 || reads.Load() < 10 {
		t.Fatalf("%d of %d reads saw a missing or partial file", torn.Load(), reads.Load())
	}
	after, _ := os.Stat(path)
	if os.SameFile(before, after) {
		t.Fatal("the file was written in place, not renamed over")
	}
	if after.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", after.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left beside it: %v", entries)
	}
	if err := flags.WriteFile(dir, []byte("{}")); err == nil {
		t.Fatal("a directory was written")
	}
	if err := flags.WriteFile(filepath.Join(dir, "missing.json"), []byte("{}")); err == nil {
		t.Fatal("a missing file was created")
	}
}
