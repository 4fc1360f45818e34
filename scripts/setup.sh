#!/usr/bin/env bash
# Idempotent set-up of VISA Hub on a fresh Debian machine. Each step is skipped when done.
#   scripts/setup.sh demo   what `make demo` runs: the hub, sandboxes, desktop, instance env (docs/demo.md)
#   scripts/setup.sh [all]  that, plus what only the tests, benchmarks and the VM backend need
#                           (chromium, PostgreSQL, QEMU, debootstrap, pytest, Playwright...): `make setup`
# Prints each stage's seconds at the end. After apt, npm, the hub venv and the instance env install
# at the same time: they share nothing but pip's cache, which pip locks.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

profile=${1:-all}
case "$profile" in demo|all) ;; *) echo "usage: $0 [demo|all]" >&2; exit 2 ;; esac
VENV=${VENV:-$here/.venv}
INSTANCE_ENV=${VISA_INSTANCE_ENV:-/opt/visahub/instance-env}  # same variable the hub configs read
STAMPS=$here/.setup-stamps
mkdir -p "$STAMPS"

log() { printf '[setup] %s\n' "$*"; }
timings=$(mktemp)
trap 'rm -f "$timings"' EXIT
# run_stage NAME FUNCTION: times it; the function runs as its own job so `set -e` holds inside it
run_stage() {
  local name=$1 start=${EPOCHREALTIME/./} rc=0 ms
  shift
  "$@" & wait $! || rc=$?
  ms=$(( (${EPOCHREALTIME/./} - start) / 1000 ))
  printf '%-14s %4d.%d s%s\n' "$name" $((ms / 1000)) $((ms % 1000 / 100)) \
    "$([ $rc -eq 0 ] || echo "  FAILED ($rc)")" >> "$timings"
  return $rc
}
# pip, with the machine's noisy "location is ignored" warnings filtered out (errors still show)
pip_q() { "$@" -q 2>&1 | grep -v -E "is ignored: it is neither|BuildBackendWarning|^\s*$|\*\*\*\*|!!|editable_wheel|with strategy|check.warn|Please be careful|name as your package|precedence during" || true; return "${PIPESTATUS[0]}"; }

# what the demo runs (sandbox backend, desktop, instrument panels); `all` adds apt_test_packages
apt_packages=(
  python3-venv python3-dev
  tigervnc-standalone-server tigervnc-tools openbox xterm x11-xserver-utils x11-xkb-utils x11-utils
  dbus-x11 xfonts-base bubblewrap novnc util-linux procps
  tint2 jgmenu pcmanfm mousepad  # the desktop's panel, menu, file manager and editor (docs/desktop.md)
  libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxkbcommon-x11-0 libxcb-image0 libxcb-render-util0  # PyDM's Qt (instrument panels)
  fonts-dejavu-core
)
# only the tests, benchmarks and the VM backend (`make image`, qemu plans) need these
apt_test_packages=(
  chromium
  postgresql
  qemu-system-x86 qemu-utils debootstrap e2fsprogs zstd
  socat
  xclip  # tests: the desktop clipboard (tests/instance/test_clipboard.py)
)
stage_apt() {
[ "$profile" = demo ] || apt_packages+=("${apt_test_packages[@]}")
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "apt: all packages present"
fi
}

# configurable-http-proxy from npm (the PyPI port breaks binary websockets).
stage_npm() {
if [ ! -x node_modules/.bin/configurable-http-proxy ] || [ package.json -nt "$STAMPS/npm" ]; then
  log "npm: installing (package.json)"
  npm install --no-audit --no-fund --loglevel=error >/dev/null
  touch "$STAMPS/npm"
else
  log "npm: up to date"
fi
}

# Hub environment: editable install of this checkout; `all` adds requirements-test.txt.
stage_hub_venv() {
if [ ! -x "$VENV/bin/python" ]; then
  log "venv: creating $VENV"
  python3 -m venv "$VENV"
fi
local reqs=(-r requirements.txt) stamp=$VENV/.visa-hub-demo
[ "$profile" = demo ] || { reqs+=(-r requirements-test.txt); stamp=$VENV/.visa-hub-all; }
# keyed on content, not mtimes: an edit during a running install must not be marked as installed
hub_hash=$(cat requirements.txt requirements-test.txt setup.cfg | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$hub_hash" ] && [ "$(cat "$VENV/.visa-hub-all" 2>/dev/null)" != "$hub_hash" ]; then
  log "venv: installing ${reqs[*]}"
  pip_q "$VENV/bin/pip" install --upgrade pip
  pip_q "$VENV/bin/pip" install --only-binary :all: "${reqs[@]}"
  pip_q "$VENV/bin/pip" install --no-deps -e .
  echo "$hub_hash" > "$stamp"
else
  log "venv: up to date"
fi
}

# Instance environment: what runs inside a sandbox. Built from Debian's /usr/bin/python3 in a
# world-readable place, because the sandbox's unprivileged user cannot read root's home.
stage_instance_env() {
if [ ! -x "$INSTANCE_ENV/bin/python" ]; then
  log "instance env: creating $INSTANCE_ENV"
  mkdir -p "$(dirname "$INSTANCE_ENV")"
  /usr/bin/python3 -m venv "$INSTANCE_ENV"
fi
src_hash=$(cat requirements-instance.txt requirements-instrument-gui.txt requirements-science.txt setup.cfg $(find visa_instance -name '*.py' -o -name '*.html' -o -name '*.js' -o -name '*.css' -o -name '*.svg' -o -name '*.json' -o -name '*.ipynb' | sort) | sha256sum | cut -c1-16)
if [ "$(cat "$INSTANCE_ENV/.visa-src" 2>/dev/null)" != "$src_hash" ]; then
  log "instance env: installing requirements and visa_instance"
  pip_q "$INSTANCE_ENV/bin/pip" install --upgrade pip
  pip_q "$INSTANCE_ENV/bin/pip" install --only-binary :all: \
    -r requirements-instance.txt -r requirements-instrument-gui.txt -r requirements-science.txt
  # jsonschema compiles this optional grammar at every Jupyter start (~1.5 s of CPU); it only
  # validates "iri" formats nobody here uses (the image recipe drops it too, docs/images.md)
  pip_q "$INSTANCE_ENV/bin/pip" uninstall -y rfc3987-syntax
  pip_q "$INSTANCE_ENV/bin/pip" install --no-deps --force-reinstall .
  echo "$src_hash" > "$INSTANCE_ENV/.visa-src"
  chmod -R a+rX "$INSTANCE_ENV"
else
  log "instance env: up to date"
fi
}

run_stage apt stage_apt
pids=()
run_stage npm stage_npm & pids+=($!)
run_stage hub-venv stage_hub_venv & pids+=($!)
run_stage instance-env stage_instance_env & pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
log "stage timings ($profile; npm, hub-venv and instance-env ran at the same time):"
sed 's/^/[setup]   /' "$timings"
[ $failed -eq 0 ] || { log "a stage failed (above)"; exit 1; }

# Browser driver for tests: Playwright (pip) drives Debian's chromium; no browser download.
log "done"
