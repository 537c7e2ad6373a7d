#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs the system packages the tests need
# when they are missing, then checks formatting and lints and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The browser test drives Debian's chromium with playwright-core, which never downloads one.
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-liberation)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The load-balancer test runs Debian's HAProxy (in /usr/sbin, which a user's PATH may lack).
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# The dashboard test runs Debian's Prometheus server on the dashboard's queries, and its
# promtool on the configuration (both from the prometheus package).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# bench/run.sh --quick draws its charts with Debian's matplotlib (a failure to draw never fails
# the run, but the drawing code runs).
/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1 || missing+=(python3-matplotlib)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The versions pinned in each package-lock.json (the browser test's playwright-core; the client
# library's ws and typescript; the Socket.IO side of the benchmark's --peers run), installed
# again whenever a lock changes.
for project in browser-test clients/js bench/peers; do
  if [ ! -e "$project/node_modules/.package-lock.json" ] ||
    [ "$project/package-lock.json" -nt "$project/node_modules/.package-lock.json" ]; then
    (cd "$project" && npm ci --no-audit --no-fund)
  fi
done
# The client library's JSDoc types, checked as its users' TypeScript would read them.
(cd clients/js && npx --no-install tsc --noEmit -p .)
# The benchmark's Socket.IO load client: its histogram and frame parsing, which decide its figures.
(cd bench/peers && node --test test/)

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# The benchmark's quick variant: a few seconds per load mode against a real three-node cluster,
# checking only that nothing went missing and nothing arrived twice.
bench/run.sh --quick
# The same beside Socket.IO: a few seconds of each of issue 16's shapes on both sides, checking
# that ours lost and duplicated nothing and that Socket.IO delivered.
bench/run.sh --peers --quick
