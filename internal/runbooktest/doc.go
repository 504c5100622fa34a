// Package runbooktest follows docs/RUNBOOK.md as an operator would: its
// marked command blocks, run by bash against the caddy binary built from
// ./cmd/caddy, on a realistic app table, with a stand-in app that runs
// its own OAuth flow and posts for its users from its own table or
// through credgate's token API, and credgate in front of it. After every
// step every user must still be able to post, no token may be lost, and
// the backup's restore must give the app its table back exactly.
//
// It has no non-test code; this file holds the package comment.
package runbooktest
