// Package vault keeps OAuth credentials safe at rest: the master keyring and
// ciphertext format, and the PostgreSQL stores for accounts, OAuth states,
// the audit log and the refresh queue.
//
// It has no Caddy dependency, so it can be used and tested as a plain library.
package vault
