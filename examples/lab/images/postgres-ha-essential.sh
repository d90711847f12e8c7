#!/bin/sh
# mmdebstrap --essential-hook for plumb-lab/postgres-ha:15; $1 is the root
# filesystem. Runs after the Essential:yes packages, BEFORE postgresql-common
# is installed: postgresql-common creates a system user `postgres` (uid < 1000)
# unless one exists, and the VMs' postgres user is uid/gid 1001 (the seed's
# convention), so bind-mounted data folders have the same owner on both sides.
set -eu
root="$1"

# passwd (useradd) is not Essential, so edit the databases directly. shadow
# and gshadow are only written if they exist yet; otherwise passwd's postinst
# (shadowconfig on) derives them from passwd and group.
grep -q '^postgres:' "$root/etc/group" || echo 'postgres:x:1001:' >> "$root/etc/group"
grep -q '^postgres:' "$root/etc/passwd" \
  || echo 'postgres:x:1001:1001:PostgreSQL administrator:/home/postgres:/bin/bash' >> "$root/etc/passwd"
if [ -f "$root/etc/shadow" ] && ! grep -q '^postgres:' "$root/etc/shadow"; then
  echo 'postgres:*:19000:0:99999:7:::' >> "$root/etc/shadow"
fi
if [ -f "$root/etc/gshadow" ] && ! grep -q '^postgres:' "$root/etc/gshadow"; then
  echo 'postgres:!::' >> "$root/etc/gshadow"
fi
mkdir -p "$root/home/postgres"
chown 1001:1001 "$root/home/postgres"
chmod 0750 "$root/home/postgres"

# No default cluster (/var/lib/postgresql/15/main): Patroni runs initdb itself.
mkdir -p "$root/etc/postgresql-common/createcluster.d"
echo 'create_main_cluster = false' > "$root/etc/postgresql-common/createcluster.d/plumb-lab.conf"
