# shellcheck shell=sh
# The systemd_unit kind's shell: the records its probe fragment prints and the functions its steps
# call. Sent after the probe and apply libraries (src/vocab/probe.sh, src/apply/lib.sh) to hosts
# that have a systemd_unit resource.

# pl_unit_state TAG UNIT: enabled and active state.
pl_unit_state() {
  if command -v systemctl >/dev/null 2>&1; then
    pl_token "$(systemctl is-enabled -- "$2" 2>/dev/null)"
    printf '%s.enabled\t%s\n' "$1" "$PL_TOK"
    pl_token "$(systemctl is-active -- "$2" 2>/dev/null)"
    printf '%s.active\t%s\n' "$1" "$PL_TOK"
  else
    printf '%s.enabled\tno-systemd\n%s.active\tno-systemd\n' "$1" "$1"
  fi
}

# pl_unit_enabled TAG UNIT: enabled state only (what compare-and-swap covers).
pl_unit_enabled() {
  if command -v systemctl >/dev/null 2>&1; then
    pl_token "$(systemctl is-enabled -- "$2" 2>/dev/null)"
    printf '%s.enabled\t%s\n' "$1" "$PL_TOK"
  else
    printf '%s.enabled\tno-systemd\n' "$1"
  fi
}

# pl_systemd: is systemd running here?
pl_systemd() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then printf 'H\tsystemd\tyes\n'; else printf 'H\tsystemd\tno\n'; fi
}
