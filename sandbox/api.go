package sandbox

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
)

// EndpointAPI names the platforms' content APIs (posting) for faults.
const EndpointAPI = "api"

// The minimal content API each platform gets, for the egress proxy: one
// post per platform, each checking the bearer token the way the platform
// does (expired, revoked or foreign tokens, and a missing scope, get the
// platform's own refusal).
var postScopes = map[string]string{
	"twitter":   "tweet.write",
	"linkedin":  "w_member_social",
	"facebook":  "pages_manage_posts",
	"instagram": "instagram_business_content_publish",
}

// apiRoute maps a content API request to its handler, nil when it is not
// one.
func (s *Server) apiRoute(platform, method, path string) handlerFunc {
	if method != http.MethodPost {
		return nil
	}
	graphPath := strings.TrimPrefix(path, "/v22.0")
	switch {
	case platform == "twitter" && path == "/2/tweets",
		platform == "linkedin" && (path == "/v2/ugcPosts" || path == "/rest/posts"),
		platform == "facebook" && strings.HasSuffix(graphPath, "/feed") && strings.Count(graphPath, "/") == 2,
		platform == "instagram" && strings.HasSuffix(graphPath, "/media") && strings.Count(graphPath, "/") == 2:
		return func(w http.ResponseWriter, r *http.Request) { s.post(w, r, platform) }
	}
	return nil
}

// post creates a post for a live token with the platform's posting scope.
func (s *Server) post(w http.ResponseWriter, r *http.Request, platform string) {
	var tweet struct {
		Text string `json:"text"`
	}
	var badBody string
	if platform == "twitter" {
		// Read before the lock: a slow body must not hold the sandbox.
		badBody = readTweet(r, &tweet)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.bearer(r, platform)
	if t == nil {
		s.reject(platform, "bad_access_token")
		apiUnauthorized(w, platform)
		return
	}
	if !contains(t.scopes, postScopes[platform]) {
		s.reject(platform, "missing_scope")
		apiForbidden(w, platform)
		return
	}
	if badBody != "" {
		s.reject(platform, "invalid_request")
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []any{map[string]any{"parameters": map[string]any{}, "message": badBody}},
			"title": "Invalid Request", "detail": "One or more parameters to your request was invalid.",
			"type": "https://api.twitter.com/2/problems/invalid-request"})
		return
	}
	s.stats[platform].Posts++
	id := randomString(12)
	switch platform {
	case "twitter":
		writeJSON(w, http.StatusCreated, map[string]any{"data": map[string]any{"id": id, "text": tweet.Text}})
	case "linkedin":
		w.Header().Set("X-RestLi-Id", "urn:li:share:"+id)
		writeJSON(w, http.StatusCreated, map[string]any{"id": "urn:li:share:" + id})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"id": id})
	}
}

// readTweet reads X's POST /2/tweets body into tweet: JSON only, as X
// takes it (a form body, which X refuses, would otherwise read as an
// empty post). It returns X's complaint, "" for a good body.
func readTweet(r *http.Request, tweet any) string {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return "Requests with bodies must have content-type of application/json."
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(tweet); err != nil {
		return "The request body is not a valid JSON object: " + err.Error()
	}
	return ""
}

// apiUnauthorized is each platform's answer to a bad access token on its
// API: X and LinkedIn say 401; the Graph APIs say 400 with code 190.
func apiUnauthorized(w http.ResponseWriter, platform string) {
	switch platform {
	case "twitter":
		writeJSON(w, http.StatusUnauthorized, map[string]any{"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})
	case "linkedin":
		writeJSON(w, http.StatusUnauthorized, map[string]any{"status": 401, "serviceErrorCode": 65600, "code": "INVALID_ACCESS_TOKEN", "message": "Invalid access token"})
	default:
		platformError(w, "facebook", http.StatusBadRequest, "", "Error validating access token: Session has expired", 190, 463)
	}
}

// apiForbidden is each platform's answer to a token without the scope.
func apiForbidden(w http.ResponseWriter, platform string) {
	switch platform {
	case "twitter":
		writeJSON(w, http.StatusForbidden, map[string]any{"title": "Forbidden", "type": "about:blank", "status": 403,
			"detail": "You are not permitted to perform this action."})
	case "linkedin":
		writeJSON(w, http.StatusForbidden, map[string]any{"status": 403, "serviceErrorCode": 100, "code": "ACCESS_DENIED",
			"message": "Not enough permissions to access: ugcPosts.CREATE.NO_VERSION"})
	default:
		platformError(w, "facebook", http.StatusForbidden, "", "(#200) The user hasn't authorized the application to perform this action", 200, 0)
	}
}

// InvalidateAccessTokens makes every live access token of platform stop
// working, as a platform does after a password change or a security
// event, leaving refresh tokens alone; it returns how many it hit.
func (s *Server) InvalidateAccessTokens(platform string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.tokens {
		if t.app.Platform == platform && !t.refresh && !t.revoked {
			t.revoked = true
			n++
		}
	}
	return n
}
