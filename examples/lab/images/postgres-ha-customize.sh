#!/bin/sh
# mmdebstrap --customize-hook for plumb-lab/postgres-ha:15; $1 is the root
# filesystem. Runs after every package is installed.
set -eu
root="$1"

# The image is useless if postgres is not 1001:1001 (see the essential hook).
ids="$(chroot "$root" id -u postgres):$(chroot "$root" id -g postgres)"
if [ "$ids" != "1001:1001" ]; then
  echo "postgres-ha image: user postgres is $ids, expected 1001:1001" >&2
  exit 1
fi

# Folders the daemons expect that systemd-tmpfiles or init scripts would
# create on a real host; containers run neither. Owned by postgres so that
# `user: "1001:1001"` works without extra set-up.
for d in /run/postgresql /var/log/postgresql /var/log/pgbackrest \
         /var/lib/pgbackrest /var/spool/pgbackrest /var/log/patroni; do
  mkdir -p "$root$d"
  chown 1001:1001 "$root$d"
done
chmod 2775 "$root/run/postgresql"
