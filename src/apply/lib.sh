# plumb apply library (after the probe library). Every step either succeeds or prints a
# `failed` record and stops the script: later steps may depend on earlier ones.
#
# Paths: every folder on the way to a managed path was checked by planning (plan/chain.rs).
# Where only root can write, root works and nobody can swap an entry under it; where one user
# owns a folder on the way, planning named that user and the script switches to it (`pl_as`)
# so every file operation there runs as that user (`$PL_AS`): a symlink the user plants can
# then only lead where the user could write anyway. Temp files get random names chosen by the
# controller and are created exclusively (`set -C`: never through an existing name or link).
PL_BACKUP=$PL_STATE/backup
PL_AS=''
PL_CLEANED=''
PL_TEMPS=''

# pl_as USER: the file operations that follow run as USER (a uid or a name), or as this shell's
# user for `root`.
PL_AS_USER=root
pl_as() {
  [ "$1" != "$PL_AS_USER" ] || return 0
  if [ "$1" = root ]; then PL_AS='' PL_AS_USER=root; return 0; fi
  pl_asg=$(id -g -- "$1") || { echo "there is no user $1 on this host" >&2; return 1; }
  PL_AS="setpriv --reuid=$1 --regid=$pl_asg --init-groups --"
  PL_AS_USER=$1
}

# pl_watchdog: when plumb's session goes away (its stdin ends: plumb closed it, died, or the
# connection dropped), stop this run and everything it started, so no apply outlives the host
# lock's owner. pl_unwatch disarms it once the run is done.
pl_watchdog() {
  exec 3<&0
  # Its output goes nowhere: once the session is gone, writing to it would kill the watchdog
  # (SIGPIPE) before it has done its job; and sshd's own hangup must not stop it either.
  ( trap '' HUP PIPE; exec 3<&-; cat >/dev/null; pl_kill_session ) 0<&3 >/dev/null 2>&1 &
  PL_WD=$!
  exec 3<&-
}

# pl_kill_session: TERM to every process of this session (sshd starts each command in a session
# of its own): the apply shell, its steps, and their children even where they made a process
# group of their own (`timeout` does). Builtins only, from /proc; without /proc, the process
# group.
pl_kill_session() {
  read -r pl_l 2>/dev/null < /proc/self/stat || { kill -TERM 0; return; }
  pl_me=${pl_l%% *}
  pl_l=${pl_l##*) }
  # shellcheck disable=SC2086 # the fields of /proc/PID/stat, split on purpose
  set -- $pl_l
  pl_sid=$4
  for pl_f in /proc/[0-9]*/stat; do
    read -r pl_l 2>/dev/null < "$pl_f" || continue
    pl_p=${pl_l%% *}
    pl_l=${pl_l##*) }
    # shellcheck disable=SC2086
    set -- $pl_l
    if [ "$4" = "$pl_sid" ] && [ "$pl_p" != "$pl_me" ]; then kill -TERM "$pl_p" 2>/dev/null; fi
  done
  kill -TERM 0 2>/dev/null
}
pl_unwatch() {
  [ -z "${PL_WD:-}" ] || kill "$PL_WD" 2>/dev/null
  PL_WD=''
}

# pl_stopped: the run was told to stop: remove this run's temp files (their random names are
# nobody else's) and end.
pl_stopped() {
  trap - TERM
  pl_ifs=$IFS
  IFS=$NL
  set -f
  for pl_o in $PL_TEMPS; do rm -f -- "$pl_o"; done
  set +f
  IFS=$pl_ifs
  exit 143
}

# pl_temp TEMP: remember a temp file of this run (removed if the run is stopped).
pl_temp() {
  PL_TEMPS="$PL_TEMPS$NL$1"
}

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
    while read -r pl_k pl_v _; do
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
  [ -d "$d" ] || (umask 022; $PL_AS mkdir -p -- "$d")
}

# pl_backup PATH: keep the current version of a regular file (the five newest per path) in
# root's backup folder. A name too long to take the run id is kept under its hash.
pl_backup() {
  [ -f "$1" ] && [ ! -L "$1" ] || return 0
  case "$1" in "$PL_STATE"/*) return 0 ;; esac
  pl_bn=${1##*/}
  if [ ${#pl_bn} -gt 200 ]; then
    pl_bn=$(printf '%s' "$pl_bn" | sha256sum) || return 1
    pl_bn="h-${pl_bn%% *}"
  fi
  b="$PL_BACKUP${1%/*}/$pl_bn"
  [ -d "${b%/*}" ] || (umask 077; mkdir -p -- "${b%/*}") || return 1
  if [ -z "$PL_AS" ]; then
    cp -p -- "$1" "$b.$PL_RUN" || return 1
  else
    # Read as the folder's user; written by root into root's folder.
    $PL_AS cat -- "$1" > "$b.$PL_RUN" || return 1
  fi
  # Run ids sort by time, and so does the glob (LC_ALL=C): the oldest come first.
  set -- "$b".[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T*Z-*
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

# pl_clean_temps: remove temp files that an interrupted run left in folder $d, once per folder
# and run, before this run puts its own there (the host lock, held by the process doing the
# work, guarantees no other run is using them).
pl_clean_temps() {
  case "$NL$PL_CLEANED$NL" in *"$NL$d$NL"*) return 0 ;; esac
  PL_CLEANED="$PL_CLEANED$NL$d"
  for o in "$d"/.plumb-tmp.*; do
    if [ -e "$o" ] || [ -L "$o" ]; then $PL_AS rm -f -- "$o"; fi
  done
  return 0
}

# pl_decode_to TEMP < base64: creates TEMP exclusively (fails if the name exists, even as a
# dangling symlink) and decodes the content into it, as PL_AS.
pl_decode_to() {
  pl_temp "$1"
  if [ -z "$PL_AS" ]; then
    set -C
    base64 -d > "$1"
    pl_rc=$?
    set +C
    return $pl_rc
  fi
  # shellcheck disable=SC2016 # "$1" is expanded by the inner shell
  base64 -d | $PL_AS sh -c 'set -C; exec cat > "$1"' sh "$1"
}

# pl_stage TEMP PATH MODE < base64: the new content of PATH, decoded into TEMP (next to PATH,
# created with MODE where the umask can give it); pl_seal checks and fsyncs it, pl_commit
# renames it into place.
pl_stage() {
  pl_mkparent "$2" || return 1
  pl_clean_temps
  pl_umask_for "$3"
  pl_decode_to "$1"
  rc=$?
  umask 077
  [ "$rc" -eq 0 ] || { $PL_AS rm -f -- "$1"; return 1; }
}

# pl_seal TEMP... < "SHA256  TEMP" lines: checks every staged file with one sha256sum and
# fsyncs them with one sync. A failed or skipped check leaves each to pl_commit.
pl_seal() {
  PL_SEALED=0
  if sha256sum -c --status --strict >/dev/null 2>&1; then PL_SEALED=1; fi
  sync -- "$@"
}

# pl_commit PATH OWNER GROUP MODE TEMP SHA256: owner, mode and rename of a staged file (the
# previous version kept in the backup). Files written as another user were left out of the
# group check (pl_seal runs as root): they are checked and fsynced here, as that user.
pl_commit() {
  pl_parent "$1"
  if [ "$PL_SEALED" != 1 ] || [ -n "$PL_AS" ]; then
    { pl_hash_is "$5" "$6" && { [ -z "$PL_AS" ] || $PL_AS sync -- "$5"; }; } ||
      { $PL_AS rm -f -- "$5"; return 1; }
  fi
  pl_umask_for "$4"
  umask 077
  if pl_own_new "$5" "$2" "$3" && { [ "$pl_chmod" = 0 ] || $PL_AS chmod -- "$4" "$5"; } &&
    pl_backup "$1" && $PL_AS mv -fT -- "$5" "$1"; then
    pl_renamed_in "$d"
    return 0
  fi
  $PL_AS rm -f -- "$5"
  return 1
}

# pl_write PATH OWNER GROUP MODE SHA256 TEMP < base64: atomic replace (temp file TEMP next to
# PATH, checked against its hash, fsync, owner, mode, rename). A cut-off transfer can never
# reach the target. Processes are spent only where the shell cannot do the work: the file is
# created with its final mode through the umask, and chown/chmod run only when that is not
# enough.
pl_write() {
  pl_mkparent "$1" || return 1
  pl_clean_temps
  t=$6
  pl_umask_for "$4"
  pl_decode_to "$t"
  rc=$?
  umask 077
  if [ "$rc" -eq 0 ] && pl_hash_is "$t" "$5" && pl_own_new "$t" "$2" "$3" &&
    { [ "$pl_chmod" = 0 ] || $PL_AS chmod -- "$4" "$t"; } && $PL_AS sync -- "$t" &&
    pl_backup "$1" && $PL_AS mv -fT -- "$t" "$1"; then
    pl_renamed_in "$d"
    return 0
  fi
  $PL_AS rm -f -- "$t"
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
  # shellcheck disable=SC2086 # one folder per line (IFS), globbing off
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
  if [ -z "$PL_AS" ]; then
    h=$(sha256sum < "$1") || return 1
  else
    h=$($PL_AS sha256sum -- "$1") || return 1
    h=${h#\\}
  fi
  [ "${h%% *}" = "$2" ] && return 0
  echo "content of $1 does not match its hash (transfer cut short?)" >&2
  return 1
}

# pl_own PATH OWNER GROUP: chown, skipping what is empty.
pl_own() {
  if [ -n "$2" ] && [ -n "$3" ]; then $PL_AS chown -h -- "$2:$3" "$1"
  elif [ -n "$2" ]; then $PL_AS chown -h -- "$2" "$1"
  elif [ -n "$3" ]; then $PL_AS chgrp -h -- "$3" "$1"
  fi
}

# pl_meta PATH OWNER GROUP MODE (empty: leave as is).
pl_meta() {
  if [ -n "$2" ]; then $PL_AS chown -h -- "$2" "$1" || return 1; fi
  if [ -n "$3" ]; then $PL_AS chgrp -h -- "$3" "$1" || return 1; fi
  if [ -n "$4" ]; then
    [ ! -L "$1" ] || { echo "$1 is a symlink" >&2; return 1; }
    $PL_AS chmod -- "$4" "$1" || return 1
  fi
  return 0
}

# pl_mkdir PATH OWNER GROUP MODE: created with its mode by mkdir itself; chown only if needed.
pl_mkdir() {
  if [ -d "$1" ] && [ ! -L "$1" ]; then
    $PL_AS chown -h -- "$2:$3" "$1" && $PL_AS chmod -- "$4" "$1"
    return
  fi
  pl_mkparent "$1" && $PL_AS mkdir -m "$4" -- "$1" && pl_own_new "$1" "$2" "$3" &&
    { [ $((0$4 & 07000)) -eq 0 ] || $PL_AS chmod -- "$4" "$1"; }
}

# pl_rm PATH: remove a file or symlink, keeping a backup of a file.
pl_rm() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  [ -L "$1" ] || pl_backup "$1" || return 1
  $PL_AS rm -f -- "$1"
}

# pl_rmdir PATH: remove a directory only if empty (a non-empty one is left with a warning
# record; plumb escapes the path when it prints it).
pl_rmdir() {
  [ -d "$1" ] && [ ! -L "$1" ] || return 0
  $PL_AS rmdir -- "$1" 2>/dev/null || printf 'W\t%s\tnot removed: directory is not empty\n' "$1"
  return 0
}

# pl_symlink PATH TARGET OWNER GROUP TEMP: atomic replace of a symlink (TEMP: a random name
# next to PATH; `ln -s` never writes through an existing name).
pl_symlink() {
  pl_mkparent "$1" || return 1
  pl_clean_temps
  pl_temp "$5"
  $PL_AS ln -s -- "$2" "$5" && pl_own "$5" "$3" "$4" && $PL_AS mv -fT -- "$5" "$1"
}

