# credgate: the two documented entry points are `make demo` and `make test`.
include xcaddy.mk

DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/credgate_demo?sslmode=disable
export DATABASE_URL

.PHONY: help build test vet unit smoke demo clean

help: ## this list
	@grep -hE '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## /  make \1\t/' | expand -t 16

build: $(CADDY_BIN) ## build bin/caddy with credgate (xcaddy)

# The test command: static checks, the Go tests with the race detector (a
# real PostgreSQL at TEST_DATABASE_URL), then the built binary end to end.
test: vet unit smoke ## go vet, go test -race, then the built binary end to end

vet: ## go vet ./...
	go vet ./...

unit: ## go test -race ./... (needs PostgreSQL at TEST_DATABASE_URL)
	go test -race -count=1 ./...

smoke: $(CADDY_BIN) ## scripts/smoke.sh on the built binary
	CADDY_BIN=$(CADDY_BIN) bash scripts/smoke.sh

# Build, create and migrate the demo database, and run credgate in front of
# a stub app with the provider sandbox (examples/sandbox.Caddyfile). The
# demo master key is generated once into .demo-key (git-ignored); set
# ENCRYPTION_MASTER_KEY to use your own. Then try: bash examples/connect.sh
demo: $(CADDY_BIN) ## run the sandbox demo on :8080 (see README)
	bash scripts/createdb.sh "$(DATABASE_URL)"
	$(CADDY_BIN) credgate migrate up
	@test -n "$$ENCRYPTION_MASTER_KEY" || test -s .demo-key || $(CADDY_BIN) credgate keygen > .demo-key
	ENCRYPTION_MASTER_KEY="$${ENCRYPTION_MASTER_KEY:-$$(cat .demo-key)}" \
		$(CADDY_BIN) run --config examples/sandbox.Caddyfile --adapter caddyfile

clean: ## remove bin/
	rm -rf bin
