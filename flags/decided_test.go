package flags

import (
	"testing"
	"time"
)

// A decided mark holds only for its user and platform, under a key the
// keyring still has, until it expires; an expired mark is refused before
// the user is read.
func TestADecidedMarkIsBoundToItsUserPlatformKeyAndTime(t *testing.T) {
	t.Parallel()
	current, previous, other := []byte("current-key-32-bytes-long......."), []byte("previous-key-32-bytes-long......"), []byte("another-key")
	now := time.Unix(1_800_000_000, 0)
	mark := DecidedMark(previous, "alice", "twitter", now)
	keys := [][]byte{current, previous}
	reads := 0
	as := func(user string) func() string { return func() string { reads++; return user } }
	if user, ok := ValidDecidedMark(keys, mark, "twitter", now.Add(DecidedFor), as("alice")); !ok || user != "alice" {
		t.Fatalf("the mark under a previous key, at its expiry: %q %v", user, ok)
	}
	for name, c := range map[string]struct {
		keys     [][]byte
		mark     string
		platform string
		user     string
	}{
		"another user":     {keys, mark, "twitter", "bob"},
		"another platform": {keys, mark, "linkedin", "alice"},
		"a key gone":       {[][]byte{current, other}, mark, "twitter", "alice"},
		"a changed mac":    {keys, mark[:len(mark)-1] + "A", "twitter", "alice"},
		"no mac":           {keys, mark[:10], "twitter", "alice"},
		"not a mark":       {keys, "junk", "twitter", "alice"},
	} {
		if _, ok := ValidDecidedMark(c.keys, c.mark, c.platform, now, as(c.user)); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	reads = 0
	if _, ok := ValidDecidedMark(keys, mark, "twitter", now.Add(DecidedFor+time.Second), as("alice")); ok || reads != 0 {
		t.Errorf("an expired mark: accepted %v, user read %d times", ok, reads)
	}
}
