# xcaddy.mk: the build recipe for bin/caddy (Caddy with credgate built in).
# Included by Makefile; kept separate so other build systems can include it.

CADDY_VERSION  ?= v2.11.9
XCADDY_VERSION ?= v0.4.5
GOBIN          ?= $(shell go env GOPATH)/bin
XCADDY         ?= $(GOBIN)/xcaddy
CADDY_BIN      ?= bin/caddy

# Go sources that end up in the binary; a change to any of them rebuilds.
CREDGATE_SOURCES := $(shell find . -name '*.go' -not -name '*_test.go' -not -path './bin/*') \
	$(wildcard migrations/*.sql) go.mod go.sum

$(XCADDY):
	go install github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION)

# XCADDY_SETCAP=0: never ask for sudo to setcap the binary (CI runs as
# root, a developer as themselves); --with …=. points xcaddy at this
# checkout instead of a published module.
$(CADDY_BIN): $(XCADDY) $(CREDGATE_SOURCES)
	@mkdir -p $(dir $(CADDY_BIN))
	XCADDY_SETCAP=0 $(XCADDY) build $(CADDY_VERSION) \
		--output $(CADDY_BIN) \
		--with github.com/credgate/credgate@v0.0.0=.
