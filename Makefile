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

# Until the demo lands: build, create and migrate the database, run Caddy
# with the example config.
demo: $(CADDY_BIN)
	bash scripts/createdb.sh "$(DATABASE_URL)"
	$(CADDY_BIN) credgate migrate up
	$(CADDY_BIN) run --config Caddyfile --adapter caddyfile

clean:
	rm -rf bin
