#!/bin/sh
# mmdebstrap --customize-hook for the VM image; $1 is the root filesystem.
# Runs on the build host after every package is installed.
set -eu
root="$1"

# The user plumb connects as besides root: passwordless sudo. Its password
# field is '*' (no password, but not locked) so sshd accepts its key.
chroot "$root" useradd --uid 1000 --user-group --create-home --shell /bin/bash plumb
chroot "$root" usermod --password '*' plumb
printf 'plumb ALL=(ALL:ALL) NOPASSWD: ALL\n' > "$root/etc/sudoers.d/plumb"
chmod 0440 "$root/etc/sudoers.d/plumb"

# sshd: every VM gets its own ed25519 host key, made on the build host and
# copied in by `lab up` before the first boot, so known_hosts is known in
# advance. Drop the keys openssh-server's postinst generated here (they would
# be shared by every VM) and offer only the ed25519 one.
rm -f "$root"/etc/ssh/ssh_host_*
cat > "$root/etc/ssh/sshd_config.d/plumb-lab.conf" <<'CONF'
# plumb lab: keys only, root by key, no DNS lookups on connect.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
CONF

# dockerd inside the VM: /var/lib/docker is a docker volume (ext4 on the
# host), where overlay2 works; on the container's own root (fuse-overlayfs)
# overlay2 cannot mount. Pin the driver so a misconfigured VM fails loudly
# instead of silently falling back to vfs.
mkdir -p "$root/etc/docker"
cat > "$root/etc/docker/daemon.json" <<'CONF'
{
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": { "max-size": "10m", "max-file": "3" }
}
CONF

# Each VM gets its own machine id from `lab up`; an empty file here.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
