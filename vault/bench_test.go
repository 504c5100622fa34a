package vault_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

// BenchmarkSealOpen compares a credgate Seal+Open of a 512-byte token set
// with raw XChaCha20-Poly1305 Seal+Open in the same run; the ratio
// credgate/raw is the overhead of the header, binding and key lookup.
func BenchmarkSealOpen(b *testing.B) {
	plain := make([]byte, 512)
	rand.Read(plain)
	// raw_same_ad uses associated data as long as credgate's binding (the
	// header, the domain and five length-prefixed fields), separating the
	// wrapper's cost from the cost of authenticating a longer binding.
	for name, adLen := range map[string]int{"raw": 54, "raw_same_ad": 5 + 6*4 + 14 + 15 + 21 + 36 + 36 + 7} {
		b.Run(name, func(b *testing.B) { benchRawXChaCha(b, plain, adLen) })
	}
	b.Run("credgate", func(b *testing.B) {
		k := mustKeyring(b, vault.KeyConfig{MasterKey: key(1)})
		bind := vault.Binding{Table: "social_accounts", Column: "credentials_encrypted",
			RowID: "0b6c1d4e-2f3a-4b5c-8d9e-0f1a2b3c4d5e", UserID: "1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5", Platform: "twitter"}
		b.ReportAllocs()
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			blob, err := k.Seal(vault.PurposeCredentials, plain, bind)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := k.Open(vault.PurposeCredentials, blob, bind); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchRawXChaCha(b *testing.B, plain []byte, adLen int) {
	{
		k := make([]byte, 32)
		rand.Read(k)
		aead, _ := chacha20poly1305.NewX(k)
		nonce := make([]byte, chacha20poly1305.NonceSizeX)
		ad := make([]byte, adLen)
		b.ReportAllocs()
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			rand.Read(nonce)
			ct := aead.Seal(nil, nonce, plain, ad)
			if _, err := aead.Open(nil, nonce, ct, ad); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// seedBlobs loads n accounts sealed under keys with COPY, fast enough for
// 100k rows.
func seedBlobs(b *testing.B, url string, keys *vault.Keyring, n int) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	plain := []byte(`{"access_token":"` + fmt.Sprintf("%0200d", 0) + `","refresh_token":"` + fmt.Sprintf("%0200d", 1) + `"}`)
	rows := make([][]any, n)
	for i := range rows {
		id, user := uuid.NewString(), uuid.NewString()
		blob, err := keys.Seal(vault.PurposeCredentials, plain, vault.Binding{Table: "social_accounts",
			Column: "credentials_encrypted", RowID: id, UserID: user, Platform: "twitter"})
		if err != nil {
			b.Fatal(err)
		}
		rows[i] = []any{id, user, "twitter", blob, int64(keys.PrimaryID()), "credgate"}
	}
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"social_accounts"},
		[]string{"id", "user_id", "platform", "credentials_encrypted", "credentials_key_id", "connected_via"}, pgx.CopyFromRows(rows))
	if err != nil {
		b.Fatal(err)
	}
	conn.Exec(ctx, `VACUUM ANALYZE social_accounts`)
}

// BenchmarkRewrap measures rewrap throughput over 100k rows against the
// same table's plain UPDATE of every row (the database's own floor) in the
// same run. Each iteration rotates the whole table to the other key.
func BenchmarkRewrap(b *testing.B) {
	const rows = 100_000
	url := pgtest.Database(b)
	pool := pgtest.Pool(b, url)
	ctx := context.Background()
	k1 := mustKeyring(b, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 1, PreviousKeys: "2:" + key(100)})
	k2 := mustKeyring(b, vault.KeyConfig{MasterKey: key(100), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})
	seedBlobs(b, url, k1, rows)

	b.Run("baseline_update", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			start := time.Now()
			if _, err := pool.Exec(ctx, `UPDATE social_accounts SET credentials_version = credentials_version + 1`); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			pool.Exec(ctx, `VACUUM social_accounts`)
		}
		b.ReportMetric(float64(rows*b.N)/total.Seconds(), "rows/s")
	})
	b.Run("rewrap", func(b *testing.B) {
		var total time.Duration
		target := []*vault.Keyring{k2, k1}
		i := 0
		for b.Loop() {
			start := time.Now()
			p, err := vault.NewAccounts(target[i%2]).Rewrap(ctx, pool, vault.BatchOptions{})
			if err != nil || p.Done != rows {
				b.Fatalf("rewrap: %+v %v", p, err)
			}
			total += time.Since(start)
			i++
			pool.Exec(ctx, `VACUUM social_accounts`)
		}
		b.ReportMetric(float64(rows*b.N)/total.Seconds(), "rows/s")
	})
}

// BenchmarkStateCreateConsume measures one OAuth flow's state round trip
// against a plain INSERT + DELETE … RETURNING of a row of the same size on
// the same table shape, without hashing or encryption.
func BenchmarkStateCreateConsume(b *testing.B) {
	url := pgtest.Database(b)
	pool := pgtest.Pool(b, url)
	ctx := context.Background()
	pool.Exec(ctx, `CREATE TABLE plain_states (LIKE oauth_states INCLUDING ALL)`)
	b.Run("baseline_insert_delete", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := make([]byte, 32)
			rand.Read(h)
			if _, err := pool.Exec(ctx, `INSERT INTO plain_states (state_hash, user_id, platform, redirect_uri, code_verifier_encrypted)
				VALUES ($1, $2, 'twitter', 'http://localhost:8080/cb', $3)`, h, alice, h); err != nil {
				b.Fatal(err)
			}
			var u string
			if err := pool.QueryRow(ctx, `DELETE FROM plain_states WHERE state_hash = $1 RETURNING user_id::text`, h).Scan(&u); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("states", func(b *testing.B) {
		states := vault.NewStates(mustKeyring(b, vault.KeyConfig{MasterKey: key(1)}))
		b.ReportAllocs()
		for b.Loop() {
			s := secret.New(rand.Text())
			if err := states.Create(ctx, pool, vault.NewState{State: s, UserID: alice, Platform: "twitter",
				Verifier: secret.New(rand.Text()), BrowserBinding: secret.New("c"), RedirectURI: "http://localhost:8080/cb"}); err != nil {
				b.Fatal(err)
			}
			if _, err := states.Consume(ctx, pool, s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
