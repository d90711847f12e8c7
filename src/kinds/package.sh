# shellcheck shell=sh
# The package kind's shell: the records its probe fragment prints and the functions its steps
# call. Sent after the probe and apply libraries (src/vocab/probe.sh, src/apply/lib.sh) to hosts
# that have a package resource.

# pl_pkg TAG NAME...: installed state of packages (apt or rpm).
pl_pkg() {
  t=$1; shift
  if command -v dpkg-query >/dev/null 2>&1; then printf '%s.mgr\tapt\n' "$t"
  elif command -v rpm >/dev/null 2>&1; then printf '%s.mgr\tdnf\n' "$t"
  else printf '%s.mgr\tnone\n' "$t"; fi
  for p in "$@"; do
    if command -v dpkg-query >/dev/null 2>&1; then
      v=$(dpkg-query -W -f='${db:Status-Abbrev}\t${Version}' -- "$p" 2>/dev/null) || v='un'
      case "$v" in ii*) pl_token "${v#*"$T"}"; printf '%s.pkg\t%s\tinstalled\t%s\n' "$t" "$p" "$PL_TOK";; *) printf '%s.pkg\t%s\tmissing\n' "$t" "$p";; esac
    elif command -v rpm >/dev/null 2>&1; then
      if v=$(rpm -q --qf '%{VERSION}-%{RELEASE}' -- "$p" 2>/dev/null); then pl_token "$v"; printf '%s.pkg\t%s\tinstalled\t%s\n' "$t" "$p" "$PL_TOK"; else printf '%s.pkg\t%s\tmissing\n' "$t" "$p"; fi
    else
      printf '%s.pkg\t%s\tunknown\n' "$t" "$p"
    fi
  done
}

# pl_pkg_install MANAGER PKG...
pl_pkg_install() {
  m=$1; shift
  case "$m" in
    apt)
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -- "$@" ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -- "$@"; } ;;
    dnf) dnf install -y -q -- "$@" ;;
    *) echo "no package manager" >&2; return 1 ;;
  esac
}

# pl_pkg_remove MANAGER PKG...
pl_pkg_remove() {
  m=$1; shift
  case "$m" in
    apt) DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -- "$@" ;;
    dnf) dnf remove -y -q -- "$@" ;;
    *) echo "no package manager" >&2; return 1 ;;
  esac
}
