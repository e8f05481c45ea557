# Shared by the nbd-*.sh tests (source after lib.sh): free localhost ports, and servers
# (vtool img serve, qemu-nbd, nbdkit) started in the background with a pid file and
# stopped by that pid when the script ends. Not a test itself.

nbd_pids=()
# alive PID: the process runs (an exited daemon can stay a zombie for seconds where PID 1
# reaps slowly, as in some containers: that counts as gone).
alive() {
  local st
  case $1 in ''|*[!0-9]*) return 1 ;; esac
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st:0:1}" != Z ] && [ "${st:0:1}" != X ]
}
nbd_cleanup() {
  for p in "${nbd_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${nbd_pids[@]}"; do
    for _ in $(seq 100); do alive "$p" || break; sleep 0.05; done
    kill -9 "$p" 2>/dev/null
  done
  rm -rf "$T"
}
trap nbd_cleanup EXIT

# A TCP port nobody listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# vserve PIDFILE ARGS...: vtool img serve --fork (back once listening), stderr to PIDFILE.err
vserve() {
  local pf=$1; shift
  "$VTOOL" img serve --fork --pid-file "$pf" "$@" 2>"$pf.err" || return 1
  nbd_pids+=("$(cat "$pf")")
  cp "$pf" "$pf.started"   # the server removes its pid file when it exits
}

# qserve PIDFILE ARGS...: qemu-nbd --fork
qserve() {
  local pf=$1; shift
  qemu-nbd --fork --pid-file "$pf" "$@" 2>"$pf.err" || return 1
  nbd_pids+=("$(cat "$pf")")
  cp "$pf" "$pf.started"   # the server removes its pid file when it exits
}

# kserve PIDFILE ARGS...: nbdkit (daemonises once its socket listens)
kserve() {
  local pf=$1; shift
  rm -f "$pf"
  nbdkit -P "$pf" "$@" 2>"$pf.err" || return 1
  for _ in $(seq 50); do [ -s "$pf" ] && break; sleep 0.1; done
  nbd_pids+=("$(cat "$pf")")
  cp "$pf" "$pf.started"   # the server removes its pid file when it exits
}

# stop PIDFILE: SIGTERM and wait for the process to be gone; after 5 s SIGKILL, and fail
stop() {
  local p; p=$(cat "$1.started")
  kill "$p" 2>/dev/null
  for _ in $(seq 250); do alive "$p" || return 0; sleep 0.02; done
  kill -9 "$p" 2>/dev/null
  return 1
}

# gone PIDFILE: the process has exited by itself within 5 s
gone() {
  local p; p=$(cat "$1.started")
  for _ in $(seq 250); do alive "$p" || return 0; sleep 0.02; done
  return 1
}

# same WHAT FILE1 FILE2: the files are equal
same() {
  if cmp -s "$2" "$3"; then pass; else fail "$1: $(diff "$2" "$3" | head -8 | tr '\n' '|')"; fi
}
