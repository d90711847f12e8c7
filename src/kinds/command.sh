# shellcheck shell=sh
# The command kind's shell: the records its probe fragment prints and the functions its steps
# call. Sent after the probe and apply libraries (src/vocab/probe.sh, src/apply/lib.sh) to hosts
# that have a command resource.

# pl_guard TAG KIND ARG: a Command guard (creates PATH | unless CMD | onlyif CMD) -> ok|fail.
pl_guard() {
  case "$2" in
    creates) if [ -e "$3" ]; then r=ok; else r=fail; fi ;;
    *) if sh -c "$3" >/dev/null 2>&1 </dev/null; then r=ok; else r=fail; fi ;;
  esac
  printf '%s.%s\t%s\n' "$1" "$2" "$r"
}

# pl_wait TIMEOUT CWD CHECK: poll CHECK every 2 s until it succeeds; fail after TIMEOUT seconds.
pl_wait() {
  to=$1; c=$2; check=$3
  end=$(( $(date +%s) + to ))
  while :; do
    if (if [ -n "$c" ]; then cd -- "$c" || exit 1; fi; sh -c "$check") >/dev/null 2>&1 </dev/null; then return 0; fi
    if [ "$(date +%s)" -ge "$end" ]; then echo "gave up after ${to}s waiting for: $check" >&2; return 1; fi
    sleep 2
  done
}

# pl_run USER CWD TIMEOUT COMMAND [VAR=VALUE...]: a Command resource.
pl_run() {
  umask 022
  u=$1; c=$2; to=$3; cmd=$4; shift 4
  if [ -n "$c" ]; then cd -- "$c" || return 1; fi
  if [ -n "$u" ] && [ "$u" != root ]; then
    timeout "$to" runuser -u "$u" -- env "$@" sh -c "$cmd" </dev/null
  else
    timeout "$to" env "$@" sh -c "$cmd" </dev/null
  fi
  rc=$?
  cd / || true
  umask 077
  [ "$rc" -eq 124 ] && echo "timed out after ${to}s" >&2
  return "$rc"
}

# pl_command_run CREATES UNLESS ONLYIF WAIT_TIMEOUT WAIT_FOR USER CWD TIMEOUT COMMAND
# [VAR=VALUE...]: a Command's run. Its guards are checked again right before it runs (the
# compare-and-swap of a command): a guard that says "done" skips it; then WAIT_FOR is polled
# (when given) and the command runs.
pl_command_run() {
  if [ -n "$1" ] && [ -e "$1" ]; then return 0; fi
  if [ -n "$2" ] && sh -c "$2" >/dev/null 2>&1 </dev/null; then return 0; fi
  if [ -n "$3" ] && ! sh -c "$3" >/dev/null 2>&1 </dev/null; then return 0; fi
  if [ -n "$5" ]; then pl_wait "$4" "$7" "$5" || return 1; fi
  shift 5
  pl_run "$@"
}
