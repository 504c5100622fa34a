package answer

import "net/http"

// ServerErrors, beneath an answer's writer, takes credgate's own 5xx
// answers instead of letting them be written: the server in front
// answers them its own way (Caddy's handle_errors, for a handler with
// `server_errors caddy`). Headers already set (Retry-After) stay set.
// Only the first is taken; anything the route writes afterwards is
// written as usual. Answers that are not credgate's (a platform's 5xx
// passed through by egress) are never taken.
type ServerErrors struct {
	http.ResponseWriter
	// Taken is the 5xx answer taken, nil when none was.
	Taken *ServerError
}

// Unwrap lets http.ResponseController reach the connection beneath.
func (s *ServerErrors) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ServerError is a 5xx answer credgate did not write: its status, and
// the code and message its JSON body would have carried. Its Error is
// what a server's error log and error routes see ({http.error.message}):
// "<code>: <message>", which never holds an internal error or a secret.
type ServerError struct {
	Status        int
	Code, Message string
}

func (e *ServerError) Error() string { return e.Code + ": " + e.Message }

// takeServerError hands a 5xx answer to a ServerErrors beneath w, if
// there is one that has taken none yet, and notes its status on the
// Recorder above it, so that the answer is counted as the 5xx it is.
func takeServerError(w http.ResponseWriter, status int, code, message string) bool {
	if status < 500 {
		return false
	}
	var rec *Recorder
	for w != nil {
		switch v := w.(type) {
		case *Recorder:
			if rec == nil {
				rec = v
			}
		case *ServerErrors:
			if v.Taken != nil {
				return false
			}
			v.Taken = &ServerError{Status: status, Code: code, Message: message}
			if rec != nil && rec.status == 0 {
				rec.status = status
			}
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
	return false
}
