# credgate: the two documented entry points are `make demo` and `make test`.
include xcaddy.mk

.PHONY: help build test vet unit smoke demo clean supabase-fixtures

help: ## this list
	@grep -hE '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## /  make \1\t/' | expand -t 16

build: $(CADDY_BIN) ## build bin/caddy with credgate (xcaddy)

# The test command: static checks, the Go tests with the race detector (a
# real PostgreSQL at TEST_DATABASE_URL), then the built binary end to end.
test: vet unit smoke ## go vet, go test -race, then the built binary end to end

vet: ## go vet ./...
	go vet ./...

# The Supabase cookie fixtures, made afresh by the real @supabase/ssr,
# supabase-js and auth-helpers (npm, pinned in the lockfile): the tests
# read these, so credgate is checked against what the libraries write
# today, and ask the same @supabase/ssr to read back the cookies credgate
# writes. Needs node and npm (and the npm registry).
SUPABASE_FIXTURES_DIR ?= $(CURDIR)/.cache/supabase-fixtures
supabase-fixtures: ## regenerate the Supabase cookie fixtures with the real libraries (node, npm)
	rm -rf $(SUPABASE_FIXTURES_DIR)
	bash scripts/supabase-fixtures/generate.sh $(SUPABASE_FIXTURES_DIR)

# -timeout: go test's default of 10 minutes per package measures the
# machine: caddymodule takes about 4 minutes on an idle two-core machine
# and ran past 10 under a load of 20, where the timeout killed it.
unit: supabase-fixtures ## go test -race ./... (needs PostgreSQL at TEST_DATABASE_URL, node and npm)
	SUPABASE_FIXTURES_DIR=$(SUPABASE_FIXTURES_DIR) go test -race -count=1 -timeout 30m ./...

smoke: $(CADDY_BIN) ## scripts/smoke.sh on the built binary
	CADDY_BIN=$(CADDY_BIN) bash scripts/smoke.sh

# The demo (scripts/demo.sh): builds, finds or starts PostgreSQL, keeps
# its key and flag file under .demo/, runs examples/sandbox.Caddyfile and
# prints where to click. Ctrl-C stops what it started.
demo: $(CADDY_BIN) ## run the demo: the app on :8080, the sandbox on :9090 (see README)
	CADDY_BIN=$(CADDY_BIN) bash scripts/demo.sh

clean: ## remove bin/
	rm -rf bin
