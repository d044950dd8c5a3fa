#!/usr/bin/env bash
# System packages the test suite needs on Debian 12, installed only when missing:
#   chromium    headless browser for tests/test_ui.py (the Dagster UI renders the asset graph)
#   postgresql  initdb/postgres for the deploy test (Dagster storage on Postgres)
# Run by `make test` (target system-deps); safe to run again: does nothing when all are present.
set -euo pipefail

missing=()
if ! command -v chromium >/dev/null 2>&1; then
    missing+=(chromium)
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system_deps.sh: missing system package(s): ${missing[*]}; apt-get is not available," \
         "install them with your system's package manager" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "system_deps.sh: missing system package(s): ${missing[*]}; run as root or with" \
         "password-less sudo, or install them yourself:" \
         "apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "system_deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
