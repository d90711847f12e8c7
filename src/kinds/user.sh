# shellcheck shell=sh
# The user kind's shell: the records its probe fragment prints and the functions its steps
# call. Sent after the probe and apply libraries (src/vocab/probe.sh, src/apply/lib.sh) to hosts
# that have a user resource.

# pl_user TAG NAME: passwd entry, then the group names (`id -Gn`), base64 of both lines.
pl_user() {
  e=$({ getent passwd -- "$2" && id -Gn -- "$2"; } 2>/dev/null | base64 -w0)
  if [ -n "$e" ]; then printf '%s\tpresent\t%s\n' "$1" "$e"; else printf '%s\tabsent\n' "$1"; fi
}

# pl_reown_uid OLD NEW / pl_reown_gid OLD NEW: re-own files after renumbering (local file systems).
# -execdir: chown runs in each file's own folder, reached by find itself, so a folder swapped for
# a symlink while find walks cannot redirect it (the re-owned user owns those folders).
pl_reown_uid() {
  find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -uid "$1" -execdir chown -h -- "$2" {} + 2>/dev/null
  return 0
}
