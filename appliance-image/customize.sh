#!/bin/bash
# Stage 1's last step, run by mmdebstrap (a customize hook) on the new root directory $1, after the overlay is in.
set -euo pipefail
R=$1
chroot "$R" systemd-sysusers
chmod 0600 "$R/etc/voxtap/appliance.conf"
# Every unit the overlay brings (a plain file with an [Install] section), and the systemd services the appliance
# relies on; MariaDB is turned on by the mode (voxtap-appliance), not here.
units=(systemd-networkd.service systemd-timesyncd.service)
for u in "$R"/etc/systemd/system/*.service; do
    if [ -f "$u" ] && [ ! -L "$u" ] && grep -q '^\[Install\]' "$u"; then units+=("$(basename "$u")"); fi
done
chroot "$R" systemctl enable "${units[@]}"
chroot "$R" systemctl disable mariadb.service
# No identity in the image: each box makes its own machine id and SSH host keys on its first boot.
echo uninitialized > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id" "$R"/etc/ssh/ssh_host_*
echo voxtap > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 voxtap\n' > "$R/etc/hosts"
chroot "$R" dpkg-query -W -f '${Package} ${Version}\n' > "$R/usr/share/voxtap-manifest.txt"
rm -f "$R"/var/cache/apt/archives/*.deb
