# plumb apply library (after the probe library). Every step either succeeds or prints a
# `failed` record and stops the script: later steps may depend on earlier ones.
PL_BACKUP=$PL_STATE/backup

# pl_do KIND INDEX CMD...: run a step; on failure report the tail of its stderr and stop.
pl_do() {
  k=$1; i=$2; shift 2
  "$@" >"$PL_ERR" 2>&1 && return 0
  rc=$?
  printf '%s\t%s\tfailed\t%s (exit %s)\n' "$k" "$i" "$(tail -c 1500 "$PL_ERR" | tr '\n\t' '  ')" "$rc"
  exit 1
}

# pl_check INDEX EXPECTED FUNC: compare-and-swap: FUNC's records must hash to EXPECTED.
pl_check() {
  # Through a file: a pipe inside $(...) would cost two more processes per resource.
  "$3" > "$PL_ERR.cas" 2>/dev/null
  h=$(sha256sum < "$PL_ERR.cas")
  h=${h%% *}
  [ "$h" = "$2" ] && return 0
  printf 'R\t%s\tconflict\t%s\n' "$1" "$h"
  return 1
}

# pl_check_text INDEX FUNC EXPECTED: compare-and-swap on the records' text itself, read back
# with builtins: no process unless they differ (then the hash found is reported).
pl_check_text() {
  "$2" > "$PL_ERR.cas" 2>/dev/null
  pl_s='' pl_l=''
  while IFS= read -r pl_l; do
    pl_s="$pl_s$pl_l
"
  done < "$PL_ERR.cas"
  pl_s="$pl_s$pl_l"
  [ "$pl_s" = "$3" ] && return 0
  h=$(sha256sum < "$PL_ERR.cas")
  printf 'R\t%s\tconflict\t%s\n' "$1" "${h%% *}"
  return 1
}

# pl_ids: PL_UID and PL_GID of this shell, from /proc with builtins where it is there.
pl_ids() {
  PL_UID='' PL_GID=''
  if [ -r /proc/self/status ]; then
    while read -r pl_k pl_v pl_rest; do
      case $pl_k in Uid:) PL_UID=$pl_v ;; Gid:) PL_GID=$pl_v; break ;; esac
    done < /proc/self/status
  fi
  [ -n "$PL_UID" ] || PL_UID=$(id -u)
  [ -n "$PL_GID" ] || PL_GID=$(id -g)
}

# pl_parent PATH: sets d to PATH's folder (paths are absolute and normalized).
pl_parent() {
  d=${1%/*}
  [ -n "$d" ] || d=/
}

# pl_mkparent PATH: create PATH's folder (world-traversable, like mkdir -p would); sets d.
pl_mkparent() {
  pl_parent "$1"
  [ -d "$d" ] || (umask 022; mkdir -p -- "$d")
}

# pl_backup PATH: keep the current version of a file (the five newest per path).
pl_backup() {
  [ -f "$1" ] || return 0
  case "$1" in "$PL_STATE"/*) return 0 ;; esac
  b="$PL_BACKUP$1"
  [ -d "${b%/*}" ] || (umask 077; mkdir -p -- "${b%/*}") || return 1
  cp -p -- "$1" "$b.$PL_RUN" || return 1
  # Run ids sort by time, and so does the glob (LC_ALL=C): the oldest come first.
  set -- "$b".*
  while [ $# -gt 5 ]; do
    rm -f -- "$1"
    shift
  done
  return 0
}

# pl_umask_for MODE: sets the umask that creates files with MODE and pl_chmod=0, or pl_chmod=1
# when the mode has execute or special bits (the umask cannot give those: chmod must).
pl_umask_for() {
  m=$((0$1))
  pl_chmod=1
  if [ $((m & 07111)) -eq 0 ]; then
    u=$((~m & 0777))
    umask "$((u >> 6 & 7))$((u >> 3 & 7))$((u & 7))"
    pl_chmod=0
  fi
}

# pl_clean_temps: remove temp files that an interrupted run left in folder $d (the host lock
# guarantees none is in use; this run's own are kept).
pl_clean_temps() {
  for o in "$d"/.plumb-tmp.*; do
    case $o in "$d/.plumb-tmp.$PL_RUN."*) continue ;; esac
    if [ -e "$o" ] || [ -L "$o" ]; then rm -f -- "$o"; fi
  done
}

# pl_stage TEMP PATH MODE < base64: the new content of PATH, decoded into TEMP (next to PATH,
# created with MODE where the umask can give it); pl_seal checks and fsyncs it, pl_commit
# renames it into place.
pl_stage() {
  pl_mkparent "$2" || return 1
  pl_clean_temps
  pl_umask_for "$3"
  base64 -d > "$1"
  rc=$?
  umask 077
  [ "$rc" -eq 0 ] || { rm -f -- "$1"; return 1; }
}

# pl_seal TEMP... < "SHA256  TEMP" lines: checks every staged file with one sha256sum and
# fsyncs them with one sync. A failed or skipped check leaves each to pl_commit.
pl_seal() {
  PL_SEALED=0
  if sha256sum -c --status --strict >/dev/null 2>&1; then PL_SEALED=1; fi
  sync -- "$@"
}

# pl_commit PATH OWNER GROUP MODE TEMP SHA256: owner, mode and rename of a staged file (the
# previous version kept in the backup).
pl_commit() {
  pl_parent "$1"
  if [ "$PL_SEALED" != 1 ]; then pl_hash_is "$5" "$6" || { rm -f -- "$5"; return 1; }; fi
  pl_umask_for "$4"
  umask 077
  if pl_own_new "$5" "$2" "$3" && { [ "$pl_chmod" = 0 ] || chmod -- "$4" "$5"; } &&
    pl_backup "$1" && mv -f -- "$5" "$1"; then
    pl_renamed_in "$d"
    return 0
  fi
  rm -f -- "$5"
  return 1
}

# pl_write PATH OWNER GROUP MODE SHA256 < base64: atomic replace (temp file, checked against its
# hash, fsync, owner, mode, rename). A cut-off transfer can never reach the target. Processes
# are spent only where the shell cannot do the work: the file is created with its final mode
# through the umask, and chown/chmod run only when that is not enough.
pl_write() {
  pl_mkparent "$1" || return 1
  pl_clean_temps
  PL_SEQ=$((PL_SEQ + 1))
  t="$d/.plumb-tmp.$PL_RUN.$PL_SEQ"
  pl_umask_for "$4"
  base64 -d > "$t"
  rc=$?
  umask 077
  if [ "$rc" -eq 0 ] && pl_hash_is "$t" "$5" && pl_own_new "$t" "$2" "$3" &&
    { [ "$pl_chmod" = 0 ] || chmod -- "$4" "$t"; } && sync -- "$t" && pl_backup "$1" && mv -f -- "$t" "$1"; then
    pl_renamed_in "$d"
    return 0
  fi
  rm -f -- "$t"
  return 1
}

# pl_renamed_in DIR: DIR holds a rename to make durable; pl_sync_dirs does it once per folder
# (at exit), not once per file. Until then a crash can only leave the previous version.
PL_DIRS=''
pl_renamed_in() {
  case "
$PL_DIRS
" in *"
$1
"*) ;; *) PL_DIRS="$PL_DIRS
$1" ;; esac
}

# pl_sync_dirs: fsync every folder a file was renamed into.
pl_sync_dirs() {
  [ -n "$PL_DIRS" ] || return 0
  pl_ifs=$IFS
  IFS='
'
  set -f
  sync -- $PL_DIRS 2>/dev/null
  set +f
  IFS=$pl_ifs
  PL_DIRS=''
}

# pl_own_new PATH OWNER GROUP: chown a file this shell just created, unless it already has them.
pl_own_new() {
  case $2 in ''|root|0) [ "$PL_UID" = 0 ] && pl_o='' || pl_o=$2 ;; *) pl_o=$2 ;; esac
  case $3 in ''|root|0) [ "$PL_GID" = 0 ] && pl_g='' || pl_g=$3 ;; *) pl_g=$3 ;; esac
  pl_own "$1" "$pl_o" "$pl_g"
}

# pl_hash_is FILE SHA256: the file holds exactly the expected bytes.
pl_hash_is() {
  h=$(sha256sum < "$1") || return 1
  [ "${h%% *}" = "$2" ] && return 0
  echo "content of $1 does not match its hash (transfer cut short?)" >&2
  return 1
}

# pl_own PATH OWNER GROUP: chown, skipping what is empty.
pl_own() {
  if [ -n "$2" ] && [ -n "$3" ]; then chown -h -- "$2:$3" "$1"
  elif [ -n "$2" ]; then chown -h -- "$2" "$1"
  elif [ -n "$3" ]; then chgrp -h -- "$3" "$1"
  fi
}

# pl_meta PATH OWNER GROUP MODE (empty: leave as is).
pl_meta() {
  if [ -n "$2" ]; then chown -h -- "$2" "$1" || return 1; fi
  if [ -n "$3" ]; then chgrp -h -- "$3" "$1" || return 1; fi
  if [ -n "$4" ]; then chmod -- "$4" "$1" || return 1; fi
  return 0
}

# pl_mkdir PATH OWNER GROUP MODE: created with its mode by mkdir itself; chown only if needed.
pl_mkdir() {
  if [ -d "$1" ]; then
    chown -- "$2:$3" "$1" && chmod -- "$4" "$1"
    return
  fi
  pl_mkparent "$1" && mkdir -m "$4" -- "$1" && pl_own_new "$1" "$2" "$3" &&
    { [ $((0$4 & 07000)) -eq 0 ] || chmod -- "$4" "$1"; }
}

# pl_rm PATH: remove a file or symlink, keeping a backup of a file.
pl_rm() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  [ -L "$1" ] || pl_backup "$1" || return 1
  rm -f -- "$1"
}

# pl_rmdir PATH: remove a directory only if empty (a non-empty one is left with a note).
pl_rmdir() {
  [ -d "$1" ] || return 0
  rmdir -- "$1" 2>/dev/null || printf 'W\t%s\tnot removed: directory is not empty\n' "$1"
  return 0
}

# pl_symlink PATH TARGET OWNER GROUP: atomic replace of a symlink.
pl_symlink() {
  pl_mkparent "$1" || return 1
  t="$1.plumb-tmp.$$"
  rm -f -- "$t"
  ln -s -- "$2" "$t" && chown -h -- "$3:$4" "$t" && mv -fT -- "$t" "$1"
}

# pl_reown_uid OLD NEW / pl_reown_gid OLD NEW: re-own files after renumbering (local file systems).
pl_reown_uid() {
  find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -uid "$1" -exec chown -h "$2" {} + 2>/dev/null
  return 0
}
pl_reown_gid() {
  find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -gid "$1" -exec chgrp -h "$2" {} + 2>/dev/null
  return 0
}

# pl_pkg_install MANAGER PKG...
pl_pkg_install() {
  m=$1; shift
  case "$m" in
    apt)
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; } ;;
    dnf) dnf install -y -q "$@" ;;
    *) echo "no package manager" >&2; return 1 ;;
  esac
}

# pl_pkg_remove MANAGER PKG...
pl_pkg_remove() {
  m=$1; shift
  case "$m" in
    apt) DEBIAN_FRONTEND=noninteractive apt-get remove -y -q "$@" ;;
    dnf) dnf remove -y -q "$@" ;;
    *) echo "no package manager" >&2; return 1 ;;
  esac
}

# pl_compose PROJECT DIR ARGS...: compose in the stack's folder, with whichever tool the host has.
pl_compose() {
  p=$1; d=$2; shift 2
  if [ -z "$PL_COMPOSE" ]; then echo "neither 'docker compose' nor 'docker-compose' is installed" >&2; return 1; fi
  if [ ! -d "$d" ]; then
    # A stack whose folder is gone can still be stopped by project name.
    $PL_COMPOSE -p "$p" "$@"
    return $?
  fi
  (cd -- "$d" && $PL_COMPOSE -p "$p" "$@")
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
  [ "$rc" -eq 124 ] && echo "timed out after ${to}s" >&2
  return "$rc"
}
