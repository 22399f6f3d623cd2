#!/usr/bin/env bash
# Two watchkeeper agents on this machine, linked by an emulated serial cable and UDP on
# loopback: watch them find each other, lose the serial cable, lose each other, and recover.
# Everything it starts is stopped when it ends (or on Ctrl-C). No root needed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "watchkeeper is built with Rust: install a toolchain first (https://rustup.rs), then re-run" >&2
  exit 1
fi
echo "== building (release)"
cargo build --release -q -p agent -p hwtests --bin watchkeeper --bin pty-cable
wk=target/release/watchkeeper

dir=$(mktemp -d /tmp/wk-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$wk" keygen "$dir/cluster.key" >/dev/null
sed -e "s|@DIR@|$dir|g" -e "s|@PORT_A@|$(free_port)|" -e "s|@PORT_B@|$(free_port)|" \
  examples/two-local-agents.toml.in > "$dir/watchkeeper.toml"
"$wk" check-config "$dir/watchkeeper.toml"

target/release/pty-cable "$dir" tty-alpha tty-beta > "$dir/cable.out" 2>&1 &
cable=$!
pids+=("$cable")
for _ in $(seq 50); do [ -e "$dir/tty-beta" ] && break; sleep 0.1; done

start() { # name
  "$wk" run --config "$dir/watchkeeper.toml" --node "$1" > "$dir/$1.log" 2>&1 &
  pids+=("$!")
  eval "pid_$1=$!"
}
show() { # title
  printf '\n== %s\n' "$1"
  for n in alpha beta; do sed -n 's/^/['"$n"'] /p' "$dir/$n.log" | tail -n +"$(( ${seen[$n]:-0} + 1 ))"; seen[$n]=$(wc -l < "$dir/$n.log"); done
}
declare -A seen

start alpha
start beta
sleep 2
show "both agents up: each sees the other on both links"
"$wk" status --config "$dir/watchkeeper.toml" --node alpha

echo; echo "== cutting the serial cable (the UDP link keeps the peer alive)"
kill -USR1 "$cable"
sleep 2
show "after the cut"
kill -USR2 "$cable"
sleep 1
show "cable reconnected"

echo; echo "== killing beta with SIGKILL (a host losing power)"
{ kill -KILL "$pid_beta"; wait "$pid_beta"; } 2>/dev/null || true
sleep 2
show "alpha declares beta dead after the deadtime"

echo; echo "== restarting beta"
start beta
sleep 2
show "beta is back with a new incarnation"
"$wk" status --config "$dir/watchkeeper.toml" --node alpha
echo; echo "== done: stopping everything"
