#!/bin/sh
# The datum driver: runs in the pipeline's own image (any image with a POSIX
# /bin/sh) and runs the pipeline's command once per request of the worker
# container (services/pps/runners/kubernetes.py PodRunner). A request is a
# directory $PACH_DRIVER_DIR/req-<n> renamed into place complete:
#   argv   the command, one argument per line
#   env    NAME=value lines to export
#   cwd    the working directory (one line; empty: /pfs)
#   stdin  the command's standard input
# The driver answers in the same directory: out (stdout and stderr as they
# come), then rc (the exit code, written last, renamed into place). A file
# named kill in it kills the command (timeout).
dir="${PACH_DRIVER_DIR:-/pach/run}"
mkdir -p "$dir"
n=0
while :; do
  req="$dir/req-$n"
  if [ ! -d "$req" ]; then
    sleep 0.1
    continue
  fi
  (
    set --
    while IFS= read -r arg || [ -n "$arg" ]; do
      set -- "$@" "$arg"
    done < "$req/argv"
    while IFS= read -r kv || [ -n "$kv" ]; do
      [ -n "$kv" ] && export "$kv"
    done < "$req/env"
    cwd=$(cat "$req/cwd")
    cd "${cwd:-/pfs}" || exit 127
    exec "$@" < "$req/stdin" > "$req/out" 2>&1
  ) &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ -f "$req/kill" ]; then
      kill -9 "$pid" 2>/dev/null
    fi
    sleep 0.05
  done
  wait "$pid"
  echo "$?" > "$req/rc.tmp"
  mv "$req/rc.tmp" "$req/rc"
  n=$((n + 1))
done
