# shellcheck shell=sh
# The group kind's shell: the records its probe fragment prints and the functions its steps
# call. Sent after the probe and apply libraries (src/vocab/probe.sh, src/apply/lib.sh) to hosts
# that have a group resource.

# pl_group TAG NAME: group entry, base64.
pl_group() {
  e=$(getent group -- "$2" 2>/dev/null | base64 -w0)
  if [ -n "$e" ]; then printf '%s\tpresent\t%s\n' "$1" "$e"; else printf '%s\tabsent\n' "$1"; fi
}

pl_reown_gid() {
  find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -gid "$1" -execdir chgrp -h -- "$2" {} + 2>/dev/null
  return 0
}
