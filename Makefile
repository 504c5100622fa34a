# credgate: the two documented entry points are `make demo` and `make test`.
include xcaddy.mk

DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/credgate_demo?sslmode=disable
export DATABASE_URL

.PHONY: build test vet unit smoke demo clean

build: $(CADDY_BIN)

# The test command: static checks, the Go tests with the race detector (a
# real PostgreSQL at TEST_DATABASE_URL), then the built binary end to end.
test: vet unit smoke

vet:
	go vet ./...

unit:
	go test -race -count=1 ./...

smoke: $(CADDY_BIN)
	CADDY_BIN=$(CADDY_BIN) bash scripts/smoke.sh

# Build, create and migrate the demo database, and run credgate in front of
# a stub app with the provider sandbox (examples/sandbox.Caddyfile). The
# demo master key is generated once into .demo-key (git-ignored); set
# ENCRYPTION_MASTER_KEY to use your own. Then try: bash examples/connect.sh
demo: $(CADDY_BIN)
	bash scripts/createdb.sh "$(DATABASE_URL)"
	$(CADDY_BIN) credgate migrate up
	@test -n "$$ENCRYPTION_MASTER_KEY" || test -s .demo-key || $(CADDY_BIN) credgate keygen > .demo-key
	ENCRYPTION_MASTER_KEY="$${ENCRYPTION_MASTER_KEY:-$$(cat .demo-key)}" \
		$(CADDY_BIN) run --config examples/sandbox.Caddyfile --adapter caddyfile

clean:
	rm -rf bin
