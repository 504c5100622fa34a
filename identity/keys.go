package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
)

// The JWKS's timings. A Supabase project's key set changes when the
// operator rotates keys: a new key is published (standby) before it
// signs, so a refetch on the first unknown kid finds it. What the timings
// guard against is a JWKS that failed once being trusted never again, and
// tokens with made-up kids (anyone can send them) using up the refetches.
const (
	// keysFresh: after this long the set is refetched in the background
	// on the next lookup (Supabase serves it with max-age=600).
	keysFresh = 5 * time.Minute
	// unknownKIDEvery: an unknown kid triggers a refetch at most this
	// often for the whole set. Any refetch brings every new key, so a
	// real new key is found at most this long after it is first used,
	// however many made-up kids arrive.
	unknownKIDEvery = 2 * time.Second
	// missingKIDBackoff: a kid that a fetch just showed to be absent
	// does not trigger another refetch for this long.
	missingKIDBackoff = 30 * time.Second
	// The first retry after a failed fetch comes this soon, doubling to
	// failedRetryMax: a JWKS that was down at the first sign-in is used
	// within seconds of its recovery.
	failedRetryMin = 500 * time.Millisecond
	failedRetryMax = 8 * time.Second
	// fetchTimeout bounds one fetch; maxJWKSBytes its body.
	fetchTimeout = 5 * time.Second
	maxJWKSBytes = 1 << 20
	// maxMissingKIDs caps the memory that made-up kids can take.
	maxMissingKIDs = 4096
)

var (
	// ErrUnknownKID: the key set does not have the token's kid.
	ErrUnknownKID = errors.New("unknown key id")
	// ErrKeysUnavailable: the key set could not be fetched.
	ErrKeysUnavailable = errors.New("key set unavailable")
)

// KeySet is a JWKS fetched over HTTP and kept current: fetched on first
// use, refetched in the background once stale, on an unknown kid (rate
// limited for the whole set and per kid), and within seconds after a
// failed fetch. A failed fetch keeps the keys already known. It is safe
// for concurrent use.
type KeySet struct {
	url    string
	client *http.Client
	now    func() time.Time

	mu          sync.Mutex
	keys        map[string]publicKey // kid → key
	fetchedAt   time.Time            // last successful fetch, when it ended
	okStarted   time.Time            // … and when it started
	attemptedAt time.Time            // last fetch started
	failures    int                  // consecutive failed fetches
	lastErr     error
	inflight    chan struct{} // closed when the running fetch ends
	missing     map[string]time.Time
}

type publicKey struct {
	key any
	alg string // the JWK's alg, "" when it names none
}

// NewKeySet returns a key set for the JWKS at url. client may be nil.
func NewKeySet(url string, client *http.Client) *KeySet {
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout}
	}
	return &KeySet{url: url, client: client, now: time.Now, missing: map[string]time.Time{}}
}

// Key returns the public key for kid, usable with alg. It waits for a
// fetch only when it must (nothing fetched yet, or a refetch for an
// unknown kid is due), bounded by ctx.
func (k *KeySet) Key(ctx context.Context, kid, alg string) (any, error) {
	began := k.now()
	for waits := 0; ; {
		k.mu.Lock()
		now := k.now()
		if pk, ok := k.keys[kid]; ok {
			if now.Sub(k.fetchedAt) > keysFresh && k.inflight == nil && k.retryDue(now) {
				k.startFetch(now) // in the background: the known key serves meanwhile
			}
			k.mu.Unlock()
			if pk.alg != "" && pk.alg != alg {
				// The key exists but is not for this algorithm: a
				// signature that cannot be right.
				return nil, fmt.Errorf("key %q is for %s, not %s", kid, pk.alg, alg)
			}
			return pk.key, nil
		}
		// Only a fetch that started after this lookup began shows that
		// the kid is absent: an earlier one (a made-up kid's, say) may
		// predate the key's publication.
		if k.keys != nil && k.failures == 0 && !k.okStarted.Before(began) {
			if len(k.missing) < maxMissingKIDs {
				k.missing[kid] = now
			}
			k.mu.Unlock()
			return nil, ErrUnknownKID
		}
		wait, in := k.inflight, k.refetchIn(kid, now)
		if wait == nil && in == 0 {
			wait = k.startFetch(now)
		}
		if wait == nil || waits >= 3 {
			if in > 0 && waits < 3 {
				// A refetch ran moments ago: wait for the next one
				// rather than refuse a key published since.
				k.mu.Unlock()
				select {
				case <-time.After(in):
					continue
				case <-ctx.Done():
					return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, ctx.Err())
				}
			}
			known, failing, lastErr := k.keys != nil, k.failures > 0, k.lastErr
			k.mu.Unlock()
			if !known || failing {
				// While the set cannot be fetched, a kid it lacks may
				// be one it would have: the JWKS is the cause.
				return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, lastErr)
			}
			return nil, ErrUnknownKID
		}
		k.mu.Unlock()
		waits++
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, ctx.Err())
		}
	}
}

// refetchIn says when a lookup of a kid the set lacks may fetch: 0 now,
// a positive wait for the set-wide slot (a refetch ran moments ago), or
// a negative one for not in this lookup (a failed fetch's retry is not
// due, or a fetch just showed the kid absent). Called with k.mu held.
func (k *KeySet) refetchIn(kid string, now time.Time) time.Duration {
	if k.keys == nil || k.failures > 0 {
		if k.retryDue(now) {
			return 0
		}
		return -1
	}
	if t, ok := k.missing[kid]; ok && now.Sub(t) < missingKIDBackoff {
		return -1
	}
	return max(0, unknownKIDEvery-now.Sub(k.attemptedAt))
}

// retryDue: after n failed fetches in a row the next may start
// failedRetryMin·2ⁿ⁻¹ (at most failedRetryMax) after the last.
func (k *KeySet) retryDue(now time.Time) bool {
	if k.failures == 0 {
		return true
	}
	wait := failedRetryMin << min(k.failures-1, 5)
	return now.Sub(k.attemptedAt) >= min(wait, failedRetryMax)
}

// startFetch starts a fetch and returns the channel closed when it ends.
// Called with k.mu held and no fetch running.
func (k *KeySet) startFetch(now time.Time) chan struct{} {
	done := make(chan struct{})
	k.inflight = done
	k.attemptedAt = now
	started := now
	go func() {
		// Not the request's context: one caller's hang-up must not fail
		// the fetch that every other caller waits for.
		keys, err := k.fetch()
		k.mu.Lock()
		defer k.mu.Unlock()
		defer close(done)
		k.inflight = nil
		if err != nil {
			k.failures++
			k.lastErr = err
			return
		}
		k.failures, k.lastErr = 0, nil
		k.keys, k.fetchedAt, k.okStarted = keys, k.now(), started
		for kid, at := range k.missing {
			if _, found := keys[kid]; found || k.fetchedAt.Sub(at) >= missingKIDBackoff {
				delete(k.missing, kid)
			}
		}
	}()
	return done
}

func (k *KeySet) fetch() (map[string]publicKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching jwks: http %d", resp.StatusCode)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&set); err != nil {
		return nil, fmt.Errorf("reading jwks: %w", err)
	}
	keys := make(map[string]publicKey, len(set.Keys))
	for _, raw := range set.Keys {
		// One key credgate cannot read (a new key type, an encryption
		// key) must not cost it the others.
		jwk, err := jwkset.NewJWKFromRawJSON(raw, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			continue
		}
		m := jwk.Marshal()
		if m.KID == "" || (m.USE != "" && m.USE != jwkset.UseSig) {
			continue
		}
		keys[m.KID] = publicKey{key: jwk.Key(), alg: string(m.ALG)}
	}
	if len(keys) == 0 {
		// An empty answer (a misconfigured or half-deployed JWKS) must
		// not replace the keys that work: it counts as a failed fetch.
		return nil, errors.New("fetching jwks: no usable signing key in the answer")
	}
	return keys, nil
}
