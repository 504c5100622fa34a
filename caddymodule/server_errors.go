package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/credgate/credgate/answer"
)

// How a handler answers its own 5xx (the server_errors option of
// credgate, credgate_tokens and credgate_egress):
//   - json (the default): credgate writes its JSON error body, as it does
//     for every other error, and Caddy sees the status in its access log;
//   - caddy: credgate writes nothing and returns the error to Caddy
//     (caddyhttp.Error with the status; its message is "<code>:
//     <message>"), so that the site's handle_errors answers it and Caddy's
//     error log records it. Without a handle_errors route that answers
//     it, Caddy answers the status with an empty body.
//
// Only one of the two: a handler that wrote its body and then returned
// the error would have Caddy run handle_errors into a response already
// written, a second body after the first.
const (
	serverErrorsJSON  = "json"
	serverErrorsCaddy = "caddy"
)

func checkServerErrors(who, mode string) error {
	switch mode {
	case "", serverErrorsJSON, serverErrorsCaddy:
		return nil
	}
	return fmt.Errorf("%s: server_errors must be json or caddy, got %q", who, mode)
}

// serveAnswering runs serve, which answers through package answer. With
// mode caddy its first 5xx answer is not written but returned to Caddy
// (answer.ServerErrors).
func serveAnswering(mode string, w http.ResponseWriter, serve func(http.ResponseWriter)) error {
	if mode != serverErrorsCaddy {
		serve(w)
		return nil
	}
	se := &answer.ServerErrors{ResponseWriter: w}
	serve(se)
	if se.Taken != nil {
		return caddyhttp.Error(se.Taken.Status, se.Taken)
	}
	return nil
}
