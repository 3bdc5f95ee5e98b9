#!/usr/bin/env bash
# The browser of the MLflow UI test (tests/integration/test_mlflow_ui.py): Debian's `chromium`,
# driven by Playwright (pip, the `test` extras) through its executable path. Playwright's own
# browser downloads are not used: they are not reachable from every machine the project runs on.
#
# Idempotent and cheap: when a Chromium binary is already on PATH (or $CHROMIUM names one) it
# only prints its path. Otherwise it installs the package with apt-get, as root or through sudo,
# and fails with a message that says what to do where neither is possible.
set -euo pipefail

find_chromium() {
    if [[ -n "${CHROMIUM:-}" ]]; then
        if [[ -x "$CHROMIUM" ]]; then
            echo "$CHROMIUM"
            return 0
        fi
        echo "install_browser: CHROMIUM=$CHROMIUM is not an executable file" >&2
        exit 1
    fi
    command -v chromium || command -v chromium-browser
}

if found=$(find_chromium); then
    echo "chromium: $found"
    exit 0
fi

if [[ "$(id -u)" == 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "install_browser: no Chromium on PATH, and no root or password-less sudo to install" \
        "Debian's 'chromium' package. Install it (apt-get install chromium), or point" \
        "CHROMIUM at a Chromium binary." >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "install_browser: no Chromium on PATH and no apt-get; install a Chromium and point" \
        "CHROMIUM at its binary." >&2
    exit 1
fi

echo "install_browser: installing Debian's chromium with apt-get" >&2
started=$SECONDS
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
# fonts-liberation: readable text in the test's screenshots (the UI's font stack falls back to
# Arial/Helvetica metrics); the package itself only recommends it.
"${as_root[@]}" apt-get install -y -q --no-install-recommends chromium fonts-liberation
found=$(find_chromium) || {
    echo "install_browser: apt-get installed chromium, but no chromium binary is on PATH" >&2
    exit 1
}
echo "chromium: $found (installed in $((SECONDS - started)) s)"
