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

