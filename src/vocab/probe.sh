# plumb host library: POSIX sh + coreutils. Sent ahead of every probe and apply script.
# Records are printed one per line: TAG<TAB>field<TAB>field...; TAG is `H` (a host fact), `A`
# (an ancestor folder of a managed path) or a resource index with an optional sub-key (3,
# 3.compose, 3.enabled). Every field is printable ASCII without tabs: text a host user could
# choose (link targets, passwd and group entries, names) is printed base64-encoded, so no byte
# of it can end a record or start another. Nothing here may print a file's content except the
# base64 certificate record, and only for certificates.
umask 077
LC_ALL=C
export LC_ALL
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
T='	'
NL='
'

# pl_path TAG PATH: what is at PATH.
pl_path() {
  if [ -L "$2" ]; then
    printf '%s\tlink\t%s\n' "$1" "$(readlink -- "$2" | base64 -w0)"
  elif [ -f "$2" ]; then
    s=$(stat -c '%a %u %g %U %G %s' -- "$2") || { printf '%s\terror\tcannot stat\n' "$1"; return 0; }
    h=$(sha256sum < "$2") || { printf '%s\terror\tcannot read\n' "$1"; return 0; }
    printf '%s\tfile\t%s\t%s\n' "$1" "$s" "${h%% *}"
  elif [ -d "$2" ]; then
    printf '%s\tdir\t%s\n' "$1" "$(stat -c '%a %u %g %U %G' -- "$2")"
  elif [ -e "$2" ]; then
    printf '%s\tother\n' "$1"
  else
    printf '%s\tabsent\n' "$1"
  fi
}

# pl_paths TAG PATH [TAG PATH]...: exactly what pl_path prints for each path, in order, from one
# `stat` and one `sha256sum` for all of them: two processes per host instead of two per file.
# A path these cannot describe (absent, a symlink, changed in between) gets its own pl_path.
pl_paths() {
  pl_tags='' pl_stat=0 pl_hash=0 pl_n=$(($# / 2))
  while [ "$pl_n" -gt 0 ]; do
    pl_tags="$pl_tags$1 "
    if [ -L "$2" ]; then :
    elif [ -f "$2" ]; then pl_stat=1 pl_hash=1
    elif [ -d "$2" ]; then pl_stat=1
    fi
    set -- "$@" "$2"
    shift 2
    pl_n=$((pl_n - 1))
  done
  # Now "$@" holds the paths, and $pl_tags their tags in the same order.
  pl_st='' pl_hs=''
  [ "$pl_stat" = 1 ] && pl_st=$(stat -c "%n$T%F$T%a %u %g %U %G %s" -- "$@" 2>/dev/null)
  # Regular files only (find does not follow symlinks): reading a fifo would never end.
  [ "$pl_hash" = 1 ] && pl_hs=$(find "$@" -maxdepth 0 -type f -exec sha256sum -- {} + 2>/dev/null)
  {
    IFS= read -r pl_sl <&3 || pl_sl=''
    IFS= read -r pl_hl <&4 || pl_hl=''
    for pl_p do
      pl_t=${pl_tags%% *}
      pl_tags=${pl_tags#* }
      pl_done=0
      case $pl_sl in
        "$pl_p$T"*)
          pl_r=${pl_sl#"$pl_p$T"}
          IFS= read -r pl_sl <&3 || pl_sl=''
          pl_h=${pl_hl%%  *}
          case ${pl_r%%"$T"*} in
            directory)
              pl_m=${pl_r#*"$T"}
              printf '%s\tdir\t%s\n' "$pl_t" "${pl_m% *}"
              pl_done=1 ;;
            'regular file'|'regular empty file')
              if [ "${pl_hl#*  }" = "$pl_p" ] && [ ${#pl_h} -eq 64 ]; then
                case $pl_h in *[!0-9a-f]*) ;; *)
                  printf '%s\tfile\t%s\t%s\n' "$pl_t" "${pl_r#*"$T"}" "$pl_h"
                  pl_done=1 ;;
                esac
              fi ;;
          esac ;;
      esac
      [ "$pl_done" = 1 ] || pl_path "$pl_t" "$pl_p"
      # Its hash line, if any, is used or not needed (a symlink to a file has one too).
      if [ "${pl_hl#*  }" = "$pl_p" ]; then IFS= read -r pl_hl <&4 || pl_hl=''; fi
    done
  } 3<<PL_STAT 4<<PL_HASH
$pl_st
PL_STAT
$pl_hs
PL_HASH
}

# pl_dirs TAG PATH [TAG PATH]...: what each folder on the way to a managed path is, as `A`
# records: `dir` with mode, uid, gid, owner and group; `link` with its target (base64); `absent`;
# `other`. From one `stat` for all of them. Planning refuses a path whose folders a symlink
# plumb did not declare leads through, and decides who may write below each folder.
pl_dirs() {
  pl_tags='' pl_n=$(($# / 2))
  while [ "$pl_n" -gt 0 ]; do
    pl_tags="$pl_tags$1 "
    set -- "$@" "$2"
    shift 2
    pl_n=$((pl_n - 1))
  done
  pl_st=$(stat -c "%n$T%F$T%a %u %g %U %G" -- "$@" 2>/dev/null)
  {
    IFS= read -r pl_sl <&3 || pl_sl=''
    for pl_p do
      pl_t=${pl_tags%% *}
      pl_tags=${pl_tags#* }
      case $pl_sl in
        "$pl_p$T"*)
          pl_r=${pl_sl#"$pl_p$T"}
          IFS= read -r pl_sl <&3 || pl_sl=''
          case ${pl_r%%"$T"*} in
            directory) printf 'A\t%s\tdir\t%s\n' "$pl_t" "${pl_r#*"$T"}" ;;
            'symbolic link') printf 'A\t%s\tlink\t%s\n' "$pl_t" "$(readlink -- "$pl_p" | base64 -w0)" ;;
            *) printf 'A\t%s\tother\n' "$pl_t" ;;
          esac ;;
        *)
          if [ -e "$pl_p" ] || [ -L "$pl_p" ]; then printf 'A\t%s\tother\n' "$pl_t"
          else printf 'A\t%s\tabsent\n' "$pl_t"; fi ;;
      esac
    done
  } 3<<PL_STAT
$pl_st
PL_STAT
}

# pl_user TAG NAME: passwd entry, then the group names (`id -Gn`), base64 of both lines.
pl_user() {
  e=$({ getent passwd -- "$2" && id -Gn -- "$2"; } 2>/dev/null | base64 -w0)
  if [ -n "$e" ]; then printf '%s\tpresent\t%s\n' "$1" "$e"; else printf '%s\tabsent\n' "$1"; fi
}

# pl_group TAG NAME: group entry, base64.
pl_group() {
  e=$(getent group -- "$2" 2>/dev/null | base64 -w0)
  if [ -n "$e" ]; then printf '%s\tpresent\t%s\n' "$1" "$e"; else printf '%s\tabsent\n' "$1"; fi
}

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

# pl_cert TAG PATH: the certificate itself (public), base64 on one line.
pl_cert() {
  if [ -f "$2" ] && [ ! -L "$2" ]; then printf '%s.pem\t%s\n' "$1" "$(base64 -w0 < "$2")"; else printf '%s.pem\tabsent\n' "$1"; fi
}

# pl_guard TAG KIND ARG: a Command guard (creates PATH | unless CMD | onlyif CMD) -> ok|fail.
pl_guard() {
  case "$2" in
    creates) if [ -e "$3" ]; then r=ok; else r=fail; fi ;;
    *) if sh -c "$3" >/dev/null 2>&1 </dev/null; then r=ok; else r=fail; fi ;;
  esac
  printf '%s.%s\t%s\n' "$1" "$2" "$r"
}

# pl_facts: the host itself.
pl_facts() {
  # From /proc with shell builtins where it is there: each process costs the host a fork.
  pl_uid=''
  if [ -r /proc/self/status ]; then
    while read -r pl_k pl_v _; do
      if [ "$pl_k" = Uid: ]; then pl_uid=$pl_v; break; fi
    done < /proc/self/status
  fi
  [ -n "$pl_uid" ] || pl_uid=$(id -u)
  printf 'H\tuid\t%s\n' "$pl_uid"
  pl_hn=''
  [ -r /proc/sys/kernel/hostname ] && read -r pl_hn < /proc/sys/kernel/hostname
  [ -n "$pl_hn" ] || pl_hn=$(hostname 2>/dev/null || cat /etc/hostname 2>/dev/null)
  pl_token "$pl_hn"
  printf 'H\thostname\t%s\n' "$PL_TOK"
  pl_state
}

# pl_state: the host state file, base64, only when it is plumb's own: a regular file owned by
# this shell's user, in a real folder owned by that user, neither writable by anyone else.
# Anything else is reported as `untrusted` with what was found, and planning refuses the host.
pl_state() {
  if [ ! -e "$PL_STATE/state" ] && [ ! -L "$PL_STATE/state" ]; then
    printf 'H\tstate\tnone\n'
    return 0
  fi
  pl_sd=$(stat -c '%F:%u:%a' -- "$PL_STATE" 2>/dev/null) || pl_sd=unreadable
  pl_sf=$(stat -c '%F:%u:%a' -- "$PL_STATE/state" 2>/dev/null) || pl_sf=unreadable
  case $pl_sd:$pl_sf in
    "directory:$pl_uid:"*":regular file:$pl_uid:"*|"directory:$pl_uid:"*":regular empty file:$pl_uid:"*)
      if [ $((0${pl_sd##*:} & 022)) -eq 0 ] && [ $((0${pl_sf##*:} & 077)) -eq 0 ]; then
        printf 'H\tstate\t%s\n' "$(base64 -w0 < "$PL_STATE/state")"
        return 0
      fi ;;
  esac
  pl_token "folder $pl_sd, file $pl_sf"
  printf 'H\tstate\tuntrusted\t%s\n' "$PL_TOK"
}

# pl_token TEXT: sets PL_TOK to TEXT's first line with every byte outside printable ASCII, and
# tabs, as `?`: for words a host prints (unit states, versions, names) that plumb matches but
# never decodes. Builtins only, unless TEXT holds such a byte.
pl_token() {
  PL_TOK=${1%%"$NL"*}
  case $PL_TOK in
    *[!\ -~]*|*"$T"*) PL_TOK=$(printf '%s' "$PL_TOK" | tr -c ' -~' '?' | tr '\t' '?') ;;
  esac
}

# pl_compose_flavor: `docker compose` or `docker-compose`, whichever works.
pl_compose_flavor() {
  if docker compose version >/dev/null 2>&1; then printf 'H\tcompose\tdocker compose\n'
  elif command -v docker-compose >/dev/null 2>&1; then printf 'H\tcompose\tdocker-compose\n'
  else printf 'H\tcompose\tnone\n'; fi
}

# pl_systemd: is systemd running here?
pl_systemd() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then printf 'H\tsystemd\tyes\n'; else printf 'H\tsystemd\tno\n'; fi
}
