package flags

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/open-feature/flagd/core/pkg/evaluator"
	"github.com/open-feature/flagd/core/pkg/logger"
	"github.com/open-feature/flagd/core/pkg/store"
	flagsync "github.com/open-feature/flagd/core/pkg/sync"
	"go.uber.org/zap"
)

// The rule behind the percentage. An operator asks two things of a flag
// file: what share of each platform's users it sends to the new flow,
// and to change that share. Both are answered from the targeting rule
// itself. A fractional split's weights are the share, exactly; measuring
// it on sample user ids (±1.5 points on 1,000) made 25 % read as 24.4 %.
// The rule is evaluated here for one platform at a time, with the
// platform as the only input a decision gives besides the user id: `if`,
// `==`, `!=`, `in`, `!`, `and`, `or`, `var platform` and `fractional` on
// the user id. A rule that needs more (a condition on another attribute,
// a split on something other than the user id, a shared $ref evaluator)
// is measured with flagd's own engine on sample user ids instead, and
// says so.

// How an InForce was obtained.
const (
	// MeasuredRule: read from the targeting rule, exact.
	MeasuredRule = "rule"
	// MeasuredSampled: the share of sample user ids the flags send to the
	// new flow (see InForce.Note for why).
	MeasuredSampled = "sampled"
)

// notStatic says why a rule's answer for a platform depends on more than
// the platform.
type notStatic struct{ why string }

func (e notStatic) Error() string { return e.why }

func notStaticf(format string, args ...any) error { return notStatic{fmt.Sprintf(format, args...)} }

// result is what a targeting expression gives for one platform: a
// constant, or a split of the users between variants.
type result struct {
	value any
	// split is set for a fractional: each variant's share, in [0, 1].
	split map[string]float64
}

// evalRule evaluates a JsonLogic targeting expression for platform.
func evalRule(node any, platform string) (result, error) {
	switch t := node.(type) {
	case json.Number:
		f, err := t.Float64()
		if err != nil {
			return result{}, notStaticf("the rule has the number %s", t)
		}
		return result{value: f}, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			v, err := evalConst(e, platform)
			if err != nil {
				return result{}, err
			}
			out[i] = v
		}
		return result{value: out}, nil
	case *object:
		return evalOp(t, platform)
	}
	return result{value: node}, nil // string, bool, nil
}

// evalConst evaluates an expression that must give a constant.
func evalConst(node any, platform string) (any, error) {
	r, err := evalRule(node, platform)
	if err != nil {
		return nil, err
	}
	if r.split != nil {
		return nil, notStaticf("the rule uses a split's outcome in a condition")
	}
	return r.value, nil
}

// argsOf is an operation's arguments: JsonLogic allows a single argument
// without its array.
func argsOf(v any) []any {
	if a, ok := v.([]any); ok {
		return a
	}
	return []any{v}
}

func evalOp(o *object, platform string) (result, error) {
	if len(o.keys) != 1 {
		return result{}, notStaticf("the rule has %s where an operation was expected", shortValue(o, 60))
	}
	op := o.keys[0]
	args := argsOf(o.vals[op])
	switch op {
	case "var":
		name, _ := args[0].(string)
		if name == "platform" {
			return result{value: platform}, nil
		}
		return result{}, notStaticf("the rule reads %s, not only the platform", shortValue(o, 60))
	case "==", "===", "!=", "!==":
		if len(args) != 2 {
			return result{}, notStaticf("%q takes two arguments", op)
		}
		a, err := evalConst(args[0], platform)
		if err != nil {
			return result{}, err
		}
		b, err := evalConst(args[1], platform)
		if err != nil {
			return result{}, err
		}
		eq, err := equal(a, b)
		if err != nil {
			return result{}, err
		}
		return result{value: eq == (op == "==" || op == "===")}, nil
	case "in":
		if len(args) != 2 {
			return result{}, notStaticf(`"in" takes two arguments`)
		}
		needle, err := evalConst(args[0], platform)
		if err != nil {
			return result{}, err
		}
		hay, err := evalConst(args[1], platform)
		if err != nil {
			return result{}, err
		}
		switch h := hay.(type) {
		case []any:
			for _, e := range h {
				if eq, err := equal(needle, e); err != nil {
					return result{}, err
				} else if eq {
					return result{value: true}, nil
				}
			}
			return result{value: false}, nil
		case string:
			if s, ok := needle.(string); ok {
				return result{value: strings.Contains(h, s)}, nil
			}
		}
		return result{}, notStaticf(`the rule has "in" over %s`, shortValue(o, 60))
	case "!", "!!":
		v, err := evalConst(args[0], platform)
		if err != nil {
			return result{}, err
		}
		return result{value: truthy(v) == (op == "!!")}, nil
	case "and", "or":
		// JsonLogic's: the first falsy (and) or truthy (or) operand, else
		// the last.
		var v any
		for _, a := range args {
			c, err := evalConst(a, platform)
			if err != nil {
				return result{}, err
			}
			v = c
			if truthy(c) == (op == "or") {
				break
			}
		}
		return result{value: v}, nil
	case "if", "?:":
		for i := 0; i+1 < len(args); i += 2 {
			c, err := evalConst(args[i], platform)
			if err != nil {
				return sameEitherWay(args, i, platform, err)
			}
			if truthy(c) {
				return evalRule(args[i+1], platform)
			}
		}
		if len(args)%2 == 1 {
			return evalRule(args[len(args)-1], platform)
		}
		return result{value: nil}, nil
	case "fractional":
		return evalFractional(o, args)
	}
	return result{}, notStaticf("the rule uses %q", op)
}

// sameEitherWay is the outcome of an "if" whose condition i needs more
// than the platform: known all the same when every branch it can still
// take (this one, the later ones, the else or the default) gives the
// same, as after `rollout set` without --platform; else err.
func sameEitherWay(args []any, i int, platform string, err error) (result, error) {
	candidates := []any{args[i+1]}
	for k := i + 3; k < len(args); k += 2 {
		candidates = append(candidates, args[k])
	}
	if len(args)%2 == 1 {
		candidates = append(candidates, args[len(args)-1])
	} else {
		candidates = append(candidates, nil)
	}
	var first result
	for n, c := range candidates {
		r, cerr := evalRule(c, platform)
		if cerr != nil || (n > 0 && !reflect.DeepEqual(r, first)) {
			return result{}, err
		}
		first = r
	}
	return first, nil
}

// evalFractional is flagd core v0.11.2's fractional (see Bucket): each
// variant's share is its weight, truncated to an integer, over their sum.
func evalFractional(o *object, args []any) (result, error) {
	if len(args) > 0 {
		if _, ok := args[0].([]any); !ok {
			if args[0] != nil {
				return result{}, notStaticf("the split buckets by %s, not the user id", shortValue(args[0], 60))
			}
			args = args[1:]
		}
	}
	if len(args) == 0 {
		return result{}, notStaticf("the split %s has no variants", shortValue(o, 60))
	}
	weights := map[string]int{}
	total := 0
	for _, a := range args {
		pair, _ := a.([]any)
		if len(pair) == 0 {
			return result{}, notStaticf("the split %s is malformed", shortValue(o, 60))
		}
		variant, ok := pair[0].(string)
		if !ok {
			return result{}, notStaticf("the split %s is malformed", shortValue(o, 60))
		}
		w := 1
		if len(pair) >= 2 {
			if n, ok := pair[1].(json.Number); ok {
				f, _ := n.Float64()
				w = int(f)
			}
		}
		if w < 0 {
			return result{}, notStaticf("the split %s has a negative weight", shortValue(o, 60))
		}
		weights[variant] += w
		total += w
	}
	if total == 0 {
		return result{}, notStaticf("the split %s has no weight", shortValue(o, 60))
	}
	split := map[string]float64{}
	for v, w := range weights {
		split[v] = float64(w) / float64(total)
	}
	return result{split: split}, nil
}

// equal compares two constants; a comparison across types (which
// JsonLogic's loose equality would coerce) is left to flagd.
func equal(a, b any) (bool, error) {
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok {
			return x == y, nil
		}
	case float64:
		if y, ok := b.(float64); ok {
			return x == y, nil
		}
	case bool:
		if y, ok := b.(bool); ok {
			return x == y, nil
		}
	case nil:
		return b == nil, nil
	}
	return false, notStaticf("the rule compares %s with %s", kindOfConst(a), kindOfConst(b))
}

func kindOfConst(v any) string {
	switch v.(type) {
	case float64:
		return "a number"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return "null"
}

// truthy is JsonLogic's truth.
func truthy(v any) bool {
	switch t := v.(type) {
	case nil:
		return false
	case bool:
		return t
	case float64:
		return t != 0
	case string:
		return t != ""
	case []any:
		return len(t) > 0
	}
	return true
}

// variantShares is how flag divides platform's users between its
// variants (shares summing to 1), as flagd evaluates it; disabled is
// true for a DISABLED flag.
func variantShares(flag *object, platform string) (shares map[string]float64, disabled bool, err error) {
	if state, _ := flag.get("state"); state == "DISABLED" {
		return nil, true, nil
	}
	variants, _ := flag.get("variants")
	vars, _ := variants.(*object)
	def, _ := flag.get("defaultVariant")
	defaultVariant, _ := def.(string)
	targeting, _ := flag.get("targeting")
	if t, ok := targeting.(*object); targeting == nil || (ok && len(t.keys) == 0) {
		return map[string]float64{defaultVariant: 1}, false, nil
	}
	r, err := evalRule(targeting, platform)
	if err != nil {
		return nil, false, err
	}
	if r.split == nil {
		switch v := r.value.(type) {
		case nil:
			r.split = map[string]float64{defaultVariant: 1}
		case string:
			r.split = map[string]float64{v: 1}
		default:
			return nil, false, notStaticf("the rule gives %s, not a variant", kindOfConst(v))
		}
	}
	for v := range r.split {
		if vars == nil {
			return nil, false, notStaticf("the flag has no variants")
		}
		if _, ok := vars.get(v); !ok {
			return nil, false, notStaticf("the rule gives %q, which is not one of the flag's variants", v)
		}
	}
	return r.split, false, nil
}

// variantValue is the value a variant key stands for.
func variantValue(flag *object, key string) any {
	variants, _ := flag.get("variants")
	vars, _ := variants.(*object)
	if vars == nil {
		return nil
	}
	v, _ := vars.get(key)
	return v
}

// ruleInForce is what the flag set puts in force for platform, read from
// the rules; a notStatic error when they cannot say it alone.
func (s *FlagSet) ruleInForce(platform string) (InForce, error) {
	out := InForce{Platform: platform, Ready: true, Measured: MeasuredRule}
	kill := s.flag(FlagEnabled)
	if kill == nil {
		out.Problem = FlagEnabled + ": " + string(ReasonFlagNotFound)
		return out, nil
	}
	shares, disabled, err := variantShares(kill, platform)
	if err != nil {
		return InForce{}, err
	}
	if disabled {
		out.Problem = FlagEnabled + ": " + string(ReasonFlagDisabled)
		return out, nil
	}
	var on, off float64
	for k, share := range shares {
		switch variantValue(kill, k) {
		case true:
			on += share
		case false:
			off += share
		}
	}
	switch {
	case on == 1:
		out.KillSwitchOn = true
	case off == 1:
	case on == 0 && off == 0:
		out.Problem = FlagEnabled + ": " + string(ReasonInvalidVariant)
		return out, nil
	default:
		return InForce{}, notStaticf("the kill switch is on for some users only")
	}
	newFlow := s.flag(FlagNewFlow)
	if newFlow == nil {
		out.Problem = FlagNewFlow + ": " + string(ReasonFlagNotFound)
		return out, nil
	}
	shares, disabled, err = variantShares(newFlow, platform)
	if err != nil {
		return InForce{}, err
	}
	if disabled {
		out.Problem = FlagNewFlow + ": " + string(ReasonFlagDisabled)
		return out, nil
	}
	var onNew float64
	for k, share := range shares {
		if variantValue(newFlow, k) == string(ArmNew) {
			onNew += share
		}
	}
	out.NewPercent = 100 * onNew
	return out, nil
}

// inForceSamples is how many sample user ids a rule that cannot be read
// alone is measured on (±1.5 points at 25 %).
const inForceSamples = 1000

// FileInForce states what the flag file data puts in force for each
// platform: the kill switch, and the share of users the split sends to
// the new flow, read exactly from the targeting rule; where the rule's
// answer depends on more than the platform, measured with flagd's own
// engine on 1,000 sample user ids, as decisions are made, with
// Measured "sampled" and a Note saying why. Nothing is logged. It fails
// when data is not a flag set flagd accepts.
func FileInForce(ctx context.Context, data []byte, platforms []string) ([]InForce, error) {
	s, err := ParseFlagSet(data)
	if err != nil {
		return nil, err
	}
	ev, err := newCoreEvaluator(data)
	if err != nil {
		return nil, err
	}
	out := make([]InForce, 0, len(platforms))
	for _, p := range platforms {
		f, err := s.ruleInForce(p)
		var why notStatic
		if errors.As(err, &why) {
			f = sampleInForce(ctx, ev, p, inForceSamples)
			f.Note = why.why
		}
		out = append(out, f)
	}
	return out, nil
}

// CheckFlagSet fails, saying why, when flagd would not take data as its
// flag set: what `rollout set` checks before it writes a file.
func CheckFlagSet(data []byte) error {
	if _, err := ParseFlagSet(data); err != nil {
		return err
	}
	_, err := newCoreEvaluator(data)
	return err
}

// newCoreEvaluator loads data into flagd core's evaluator, the engine the
// in-process provider evaluates with, without the provider: the provider
// logs JSON lines to stderr of its own (it ignores the logger it is
// given), starts a sync loop and needs waiting for, and a command that
// only reads a file needs none of that.
func newCoreEvaluator(data []byte) (*evaluator.JSON, error) {
	const source = "credgate"
	st := store.NewFlags()
	st.FlagSources = []string{source}
	// See evaluationLock: a new evaluator registers flagd's operations
	// in jsonlogic's process-wide table.
	evaluationLock.Lock()
	ev := evaluator.NewJSON(logger.NewLogger(zap.NewNop(), false), st)
	evaluationLock.Unlock()
	if _, _, err := ev.SetState(flagsync.DataSync{FlagData: string(data), Source: source, Type: flagsync.ALL}); err != nil {
		return nil, fmt.Errorf("not a flag set flagd accepts: %w", err)
	}
	return ev, nil
}

// sampleInForce measures the flags on samples sample user ids, as
// Rollout.InForce does through a provider.
func sampleInForce(ctx context.Context, ev *evaluator.JSON, platform string, samples int) InForce {
	out := InForce{Platform: platform, Ready: true, Measured: MeasuredSampled}
	evalCtx := func(i int) map[string]any {
		return map[string]any{"targetingKey": sampleUser(i), "platform": platform}
	}
	evaluationLock.RLock()
	on, _, _, _, err := ev.ResolveBooleanValue(ctx, "", FlagEnabled, evalCtx(0))
	evaluationLock.RUnlock()
	if err != nil {
		out.Problem = FlagEnabled + ": " + string(coreReason(err))
		return out
	}
	out.KillSwitchOn = on
	onNew := 0
	for i := range samples {
		evaluationLock.RLock()
		v, _, _, _, err := ev.ResolveStringValue(ctx, "", FlagNewFlow, evalCtx(i))
		evaluationLock.RUnlock()
		if err != nil {
			out.Problem = FlagNewFlow + ": " + string(coreReason(err))
			return out
		}
		if v == string(ArmNew) {
			onNew++
		}
	}
	out.Samples = samples
	out.NewPercent = 100 * float64(onNew) / float64(samples)
	return out
}

// coreReason maps flagd core's error codes to the decision reasons.
func coreReason(err error) Reason {
	switch err.Error() {
	case "FLAG_NOT_FOUND":
		return ReasonFlagNotFound
	case "FLAG_DISABLED":
		return ReasonFlagDisabled
	case "TYPE_MISMATCH":
		return ReasonInvalidVariant
	}
	return ReasonProviderError
}

// Platforms are the platforms the new-flow flag's targeting names, sorted.
func (s *FlagSet) Platforms() []string {
	f := s.flag(FlagNewFlow)
	if f == nil {
		return nil
	}
	targeting, _ := f.get("targeting")
	var names []string
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case *object:
			for _, k := range t.keys {
				args := argsOf(t.vals[k])
				if (k == "==" || k == "===" || k == "in") && len(args) == 2 && isPlatformVar(args[0]) {
					switch other := args[1].(type) {
					case string:
						if k != "in" {
							names = append(names, other)
						}
					case []any:
						for _, e := range other {
							if s, ok := e.(string); ok {
								names = append(names, s)
							}
						}
					}
				}
				if (k == "==" || k == "===") && len(args) == 2 && isPlatformVar(args[1]) {
					if s, ok := args[0].(string); ok {
						names = append(names, s)
					}
				}
				walk(t.vals[k])
			}
		case []any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(targeting)
	slices.Sort(names)
	return slices.Compact(names)
}

// isPlatformVar is {"var": "platform"}.
func isPlatformVar(v any) bool {
	o, ok := v.(*object)
	if !ok || len(o.keys) != 1 || o.keys[0] != "var" {
		return false
	}
	name, _ := argsOf(o.vals["var"])[0].(string)
	return name == "platform"
}

// isPlatformIs is a condition true for platform alone:
// {"==": [{"var": "platform"}, platform]} (either way round).
func isPlatformIs(v any, platform string) bool {
	o, ok := v.(*object)
	if !ok || len(o.keys) != 1 || (o.keys[0] != "==" && o.keys[0] != "===") {
		return false
	}
	args, _ := o.vals[o.keys[0]].([]any)
	if len(args) != 2 {
		return false
	}
	return (isPlatformVar(args[0]) && args[1] == platform) || (isPlatformVar(args[1]) && args[0] == platform)
}

// platformIs is the condition isPlatformIs recognises.
func platformIs(platform string) *object {
	return obj("==", []any{obj("var", "platform"), platform})
}

// splitWeights are the weights of a [["new", w], ["legacy", 100·s − w]]
// split at percent: whole numbers (flagd truncates weights), scaled by
// 10 or 100 for a percentage with decimals.
func splitWeights(percent float64) (newW, legacyW json.Number, err error) {
	if math.IsNaN(percent) || percent < 0 || percent > 100 {
		return "", "", fmt.Errorf("the percentage must be from 0 to 100, got %v", percent)
	}
	for scale := 1.0; scale <= 100; scale *= 10 {
		w := math.Round(percent * scale)
		if math.Abs(percent*scale-w) < 1e-6 {
			return json.Number(strconv.FormatFloat(w, 'f', 0, 64)), json.Number(strconv.FormatFloat(100*scale-w, 'f', 0, 64)), nil
		}
	}
	return "", "", fmt.Errorf("the percentage %v has more than two decimals", percent)
}

// SetNewPercent makes the new-flow flag send percent of the users to the
// new flow: on every branch of its targeting when platform is "", or on
// platform's alone, with a branch of its own in front of the others when
// it shares one (or the default) with other platforms. A flag with no
// targeting gets a fractional split. Only oauth-new-flow changes: the
// kill switch and everything else stay as they are. It refuses, saying
// what it found, a rule it cannot change without guessing: a split that
// is not [[new, p], [legacy, 100 − p]] on the user id (new first, so that
// raising the percentage only adds users), or a branch that gives
// something other than a split or a variant.
func (s *FlagSet) SetNewPercent(percent float64, platform string) error {
	newW, legacyW, err := splitWeights(percent)
	if err != nil {
		return err
	}
	f := s.flag(FlagNewFlow)
	if f == nil {
		return fmt.Errorf("the flag set has no %s flag (an object under \"flags\")", FlagNewFlow)
	}
	newKey, legacyKey, err := armVariants(f)
	if err != nil {
		return err
	}
	e := editor{newKey: newKey, legacyKey: legacyKey, newW: newW, legacyW: legacyW}
	targeting, has := f.get("targeting")
	t, isObject := targeting.(*object)
	if has && targeting != nil && !isObject {
		return fmt.Errorf("%s's targeting is a JSON %s, not a rule", FlagNewFlow, kindOf(targeting))
	}
	empty := targeting == nil || len(t.keys) == 0

	if platform == "" {
		if empty {
			f.set("targeting", e.split())
			return nil
		}
		return e.setEvery(t, "the targeting")
	}

	// One platform: what it gets now must be known, or a branch in front
	// could override a rule meant for it too.
	if _, _, err := variantShares(f, platform); err != nil {
		return fmt.Errorf("cannot tell which rule %s follows now (%v): change the file by hand", platform, err)
	}
	if empty {
		def, _ := f.get("defaultVariant")
		var rest *object
		switch def {
		case newKey:
			rest = e.splitAt("100", "0")
		case legacyKey:
			rest = e.splitAt("0", "100")
		default:
			return fmt.Errorf("%s's defaultVariant is %s, neither %q nor %q", FlagNewFlow, shortValue(def, 40), newKey, legacyKey)
		}
		f.set("targeting", obj("if", []any{platformIs(platform), e.split(), rest}))
		return nil
	}
	if len(t.keys) == 1 && t.keys[0] == "if" {
		args, ok := t.vals["if"].([]any)
		if !ok {
			return fmt.Errorf("%s's targeting is an \"if\" without a list", FlagNewFlow)
		}
		for i := 0; i+1 < len(args); i += 2 {
			c, err := evalConst(args[i], platform)
			if err != nil {
				// variantShares found that this does not change what the
				// platform gets: a branch in front is as good.
				break
			}
			if !truthy(c) {
				continue
			}
			if isPlatformIs(args[i], platform) {
				// Its own branch: change it where it is.
				v, err := e.setResult(args[i+1], fmt.Sprintf("the branch for %s", platform))
				if err != nil {
					return err
				}
				args[i+1] = v
				return nil
			}
			break // shared with other platforms
		}
		t.vals["if"] = append([]any{platformIs(platform), e.split()}, args...)
		return nil
	}
	f.set("targeting", obj("if", []any{platformIs(platform), e.split(), t}))
	return nil
}

// armVariants are the new-flow flag's variant keys for the new and the
// legacy arm: the variants whose values are "new" and "legacy".
func armVariants(f *object) (newKey, legacyKey string, err error) {
	variants, _ := f.get("variants")
	vars, ok := variants.(*object)
	if ok {
		var news, legacies []string
		for _, k := range vars.keys {
			switch vars.vals[k] {
			case string(ArmNew):
				news = append(news, k)
			case string(ArmLegacy):
				legacies = append(legacies, k)
			}
		}
		if len(news) == 1 && len(legacies) == 1 {
			return news[0], legacies[0], nil
		}
	}
	return "", "", fmt.Errorf(`%s's variants are %s: credgate needs one whose value is "new" and one whose value is "legacy"`,
		FlagNewFlow, shortValue(variants, 60))
}

// editor writes one percentage into a new-flow rule.
type editor struct {
	newKey, legacyKey string
	newW, legacyW     json.Number
}

func (e editor) split() *object { return e.splitAt(e.newW, e.legacyW) }

func (e editor) splitAt(newW, legacyW json.Number) *object {
	return obj("fractional", []any{[]any{e.newKey, newW}, []any{e.legacyKey, legacyW}})
}

// setEvery sets every branch of rule t, and adds an else branch to an
// "if" without one, so that no platform falls through to the default.
func (e editor) setEvery(t *object, where string) error {
	if len(t.keys) != 1 {
		return fmt.Errorf("%s is %s, not one rule", where, shortValue(t, 60))
	}
	switch op := t.keys[0]; op {
	case "fractional":
		return e.setSplit(t, where)
	case "if":
		args, ok := t.vals["if"].([]any)
		if !ok {
			return fmt.Errorf("%s is an \"if\" without a list", where)
		}
		for i := range args {
			if i%2 == 0 && i != len(args)-1 {
				continue // a condition
			}
			what := fmt.Sprintf("the else branch of %s", where)
			if i%2 == 1 {
				what = fmt.Sprintf("the branch of %s where %s", where, shortValue(args[i-1], 50))
			}
			v, err := e.setResult(args[i], what)
			if err != nil {
				return err
			}
			args[i] = v
		}
		if len(args)%2 == 0 {
			args = append(args, e.split())
		}
		t.vals["if"] = args
		return nil
	default:
		return fmt.Errorf(`%s is a %q rule (%s): credgate changes a fractional split, an "if" whose branches are splits or variants, or no targeting; change it by hand`,
			where, op, shortValue(t, 60))
	}
}

// setResult sets one branch's outcome: a split, a variant, a nested
// "if", or nothing (the default variant) become the split.
func (e editor) setResult(v any, where string) (any, error) {
	switch t := v.(type) {
	case nil:
		return e.split(), nil
	case string:
		if t == e.newKey || t == e.legacyKey {
			return e.split(), nil
		}
		return nil, fmt.Errorf("%s gives the variant %q, which is neither arm", where, t)
	case *object:
		if err := e.setEvery(t, where); err != nil {
			return nil, err
		}
		return t, nil
	}
	return nil, fmt.Errorf("%s gives %s, not a split or a variant", where, shortValue(v, 60))
}

// setSplit rewrites a fractional split in place, if it is one credgate
// writes: [[new, w], [legacy, w]] on the user id, new first. Reordering
// or merging another split would move users both ways.
func (e editor) setSplit(t *object, where string) error {
	args, _ := t.vals["fractional"].([]any)
	ok := len(args) == 2
	for i, want := range []string{e.newKey, e.legacyKey} {
		if ok {
			pair, _ := args[i].([]any)
			ok = len(pair) == 2 && pair[0] == want
			if ok {
				_, ok = pair[1].(json.Number)
			}
		}
	}
	if !ok {
		if len(args) > 0 {
			if _, isPair := args[0].([]any); !isPair {
				return fmt.Errorf("%s is a split that buckets by %s, not the user id: change it by hand", where, shortValue(args[0], 50))
			}
		}
		return fmt.Errorf(`%s is the split %s: credgate writes only [[%q, p], [%q, 100 - p]] (new first, so that raising it only adds users); change it by hand`,
			where, shortValue(t, 70), e.newKey, e.legacyKey)
	}
	t.vals["fractional"] = e.split().vals["fractional"]
	return nil
}
