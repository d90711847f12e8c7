# shellcheck shell=sh
# The compose_stack kind's shell: the records its probe fragment prints and the functions its steps
# call. Sent after the probe and apply libraries (src/vocab/probe.sh, src/apply/lib.sh) to hosts
# that have a compose_stack resource.

# pl_stack_ps TAG PROJECT: the project's containers (service and state).
pl_stack_ps() {
  if command -v docker >/dev/null 2>&1; then
    docker ps -a --filter "label=com.docker.compose.project=$2" \
      --format '{{.Label "com.docker.compose.service"}} {{.State}}' 2>/dev/null |
      while read -r svc st; do
        pl_token "$svc"; svc=$PL_TOK
        pl_token "$st"
        printf '%s.ps\t%s\t%s\n' "$1" "$svc" "$PL_TOK"
      done
    printf '%s.ps\tend\n' "$1"
  else
    printf '%s.ps\tno-docker\n' "$1"
  fi
}

# pl_compose_flavor: `docker compose` or `docker-compose`, whichever works.
pl_compose_flavor() {
  if docker compose version >/dev/null 2>&1; then printf 'H\tcompose\tdocker compose\n'
  elif command -v docker-compose >/dev/null 2>&1; then printf 'H\tcompose\tdocker-compose\n'
  else printf 'H\tcompose\tnone\n'; fi
}


# pl_compose FLAVOR PROJECT DIR ARGS...: compose in the stack's folder with the tool the probe
# found (`docker compose` or `docker-compose`).
pl_compose() {
  f=$1; p=$2; d=$3; shift 3
  case $f in
    'docker compose'|docker-compose) ;;
    *) echo "neither 'docker compose' nor 'docker-compose' is installed" >&2; return 1 ;;
  esac
  if [ ! -d "$d" ]; then
    # A stack whose folder is gone can still be stopped by project name.
    # shellcheck disable=SC2086 # the flavor is one or two words, checked above
    $f -p "$p" "$@"
    return $?
  fi
  # shellcheck disable=SC2086
  (cd -- "$d" && $f -p "$p" "$@")
}
