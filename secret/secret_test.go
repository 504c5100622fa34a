package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/credgate/credgate/secret"
)

func TestValueNeverPrints(t *testing.T) {
	t.Parallel()
	const token = "ya29.super-secret-token"
	s := secret.New(token)
	holder := struct {
		Token secret.Value
		Ptr   *secret.Value
	}{s, &s}

	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%10s"} {
		outputs = append(outputs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, holder))
	}
	js, _ := json.Marshal(holder)
	outputs = append(outputs, string(js), fmt.Sprint(s), s.String())
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "token", s, "holder", holder)
	outputs = append(outputs, logs.String())

	for _, out := range outputs {
		if strings.Contains(out, token) || strings.Contains(out, fmt.Sprintf("%x", token)) {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if s.Reveal() != token {
		t.Error("Reveal lost the value")
	}
	if !s.Equal(secret.New(token)) || s.Equal(secret.New("other")) {
		t.Error("Equal is wrong")
	}
}
