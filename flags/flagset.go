package flags

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// FlagSet is a flagd flag file held as written, so that `rollout set` can
// change one flag's targeting and write the rest back as it found it:
// every key keeps its place (an operator's diff shows only what changed),
// every number keeps its spelling, and keys credgate does not know
// ($schema, $evaluators, metadata, other flags) pass through untouched.
// encoding/json's maps would sort the keys and lose none of the values,
// but the diff would be the whole file.
type FlagSet struct {
	root *object
}

// object is a JSON object in its written key order.
type object struct {
	keys []string
	vals map[string]any
}

func newObject() *object { return &object{vals: map[string]any{}} }

func (o *object) get(key string) (any, bool) {
	v, ok := o.vals[key]
	return v, ok
}

// set replaces the value of key in place, or appends key.
func (o *object) set(key string, v any) {
	if _, ok := o.vals[key]; !ok {
		o.keys = append(o.keys, key)
	}
	o.vals[key] = v
}

// obj builds an object from key, value pairs, in that order.
func obj(kv ...any) *object {
	o := newObject()
	for i := 0; i+1 < len(kv); i += 2 {
		o.set(kv[i].(string), kv[i+1])
	}
	return o
}

// ParseFlagSet reads a flag file: a JSON object with a "flags" object,
// which is what flagd needs. Its error says what is wrong and where.
func ParseFlagSet(data []byte) (*FlagSet, error) {
	if !json.Valid(data) {
		var v any
		err := json.Unmarshal(data, &v)
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			line := 1 + bytes.Count(data[:min(int(syntax.Offset), len(data))], []byte("\n"))
			return nil, fmt.Errorf("not valid JSON: %v (line %d)", syntax, line)
		}
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	root, ok := v.(*object)
	if !ok {
		return nil, fmt.Errorf("not a flag set: the file is a JSON %s, not an object with a \"flags\" object", kindOf(v))
	}
	if f, _ := root.get("flags"); f == nil {
		return nil, errors.New(`not a flag set: no "flags" object`)
	} else if _, ok := f.(*object); !ok {
		return nil, fmt.Errorf(`not a flag set: "flags" is a JSON %s, not an object`, kindOf(f))
	}
	return &FlagSet{root: root}, nil
}

// decodeValue reads one JSON value, objects in their written order.
func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	switch d {
	case '{':
		o := newObject()
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("object key %v is not a string", k)
			}
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			o.set(key, v)
		}
		_, err := dec.Token()
		return o, err
	case '[':
		arr := []any{}
		for dec.More() {
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err := dec.Token()
		return arr, err
	}
	return nil, fmt.Errorf("unexpected %v", d)
}

func kindOf(v any) string {
	switch v.(type) {
	case *object:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	}
	return "null"
}

// flag returns the named flag's definition, nil when there is none (or
// it is not an object).
func (s *FlagSet) flag(name string) *object {
	all, _ := s.root.get("flags")
	f, _ := all.(*object).get(name)
	o, _ := f.(*object)
	return o
}

// Marshal writes the flag set back: two-space indentation, and a value
// that fits on its line within lineWidth written on one line, the way
// flags.example.json and flagd's own examples are laid out.
func (s *FlagSet) Marshal() []byte {
	var b strings.Builder
	writeValue(&b, s.root, 0, 0)
	b.WriteByte('\n')
	return []byte(b.String())
}

// lineWidth is where Marshal breaks a value over several lines.
const lineWidth = 80

// writeValue writes v indented by indent spaces; used is how many columns
// of the current line are taken already (indentation and key).
func writeValue(b *strings.Builder, v any, indent, used int) {
	inline := inlineValue(v)
	switch t := v.(type) {
	case *object:
		if len(t.keys) == 0 || (indent > 0 && used+utf8.RuneCountInString(inline)+1 <= lineWidth) {
			b.WriteString(inline)
			return
		}
		pad := strings.Repeat(" ", indent+2)
		b.WriteString("{\n")
		for i, k := range t.keys {
			key := jsonString(k) + ": "
			b.WriteString(pad + key)
			writeValue(b, t.vals[k], indent+2, len(pad)+utf8.RuneCountInString(key))
			if i < len(t.keys)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(strings.Repeat(" ", indent) + "}")
	case []any:
		if len(t) == 0 || (indent > 0 && used+utf8.RuneCountInString(inline)+1 <= lineWidth) {
			b.WriteString(inline)
			return
		}
		pad := strings.Repeat(" ", indent+2)
		b.WriteString("[\n")
		for i, e := range t {
			b.WriteString(pad)
			writeValue(b, e, indent+2, len(pad))
			if i < len(t)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(strings.Repeat(" ", indent) + "]")
	default:
		b.WriteString(inline)
	}
}

// inlineValue is v on one line: `{ "on": true, "off": false }`,
// `[ "new", 25 ]`.
func inlineValue(v any) string {
	switch t := v.(type) {
	case *object:
		if len(t.keys) == 0 {
			return "{}"
		}
		parts := make([]string, len(t.keys))
		for i, k := range t.keys {
			parts[i] = jsonString(k) + ": " + inlineValue(t.vals[k])
		}
		return "{ " + strings.Join(parts, ", ") + " }"
	case []any:
		if len(t) == 0 {
			return "[]"
		}
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = inlineValue(e)
		}
		return "[ " + strings.Join(parts, ", ") + " ]"
	case string:
		return jsonString(t)
	case json.Number:
		return t.String()
	case bool:
		if t {
			return "true"
		}
		return "false"
	case nil:
		return "null"
	}
	// Only values decodeValue or the editor made reach here.
	panic(fmt.Sprintf("flags: unexpected JSON value %T", v))
}

// jsonString quotes s as JSON without escaping <, > and & (a flag file
// is not HTML, and a URL in it should read as written).
func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// shortValue is v on one line, cut to n runes: for error messages.
func shortValue(v any, n int) string {
	s := inlineValue(v)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + " …"
}
