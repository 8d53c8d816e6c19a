#!/bin/sh
# First boot of a flashed appliance: per-device secrets (SSH host keys, the database password), the operator's
# settings from the FAT partition (appliance/firstboot.conf), hugepages and the capture NIC.
set -eu
SEED=/boot/efi/appliance/firstboot.conf
# Under QEMU the seed may come through fw_cfg instead (the image test passes its settings this way).
FWCFG=/sys/firmware/qemu_fw_cfg/by_name/opt/voxtap/firstboot.conf/raw
modprobe qemu_fw_cfg 2> /dev/null || true
[ -r "$FWCFG" ] && SEED=$FWCFG
HOSTNAME=voxtap
CAPTURE_PCI=""
CAPTURE_IFACE=""
HUGEPAGES=256
SERVER_DESTINATION=""
SERVER_PASSWORD=""
ID_SENSOR=1
SMOKETEST=""
# shellcheck disable=SC1090
[ -r "$SEED" ] && . "$SEED"
hostnamectl set-hostname "$HOSTNAME" 2>/dev/null || echo "$HOSTNAME" > /etc/hostname
[ -x /usr/bin/ssh-keygen ] && ssh-keygen -A
mkdir -p /etc/voipmonitor.d /var/spool/voxtap /var/lib/voxtap
umask 077
DBPW=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
mariadb <<SQL
CREATE DATABASE IF NOT EXISTS voipmonitor;
CREATE USER IF NOT EXISTS 'voxtap'@'localhost' IDENTIFIED BY '$DBPW';
CREATE USER IF NOT EXISTS 'voxtap'@'127.0.0.1' IDENTIFIED BY '$DBPW';
ALTER USER 'voxtap'@'localhost' IDENTIFIED BY '$DBPW';
ALTER USER 'voxtap'@'127.0.0.1' IDENTIFIED BY '$DBPW';
GRANT ALL PRIVILEGES ON voipmonitor.* TO 'voxtap'@'localhost';
GRANT ALL PRIVILEGES ON voipmonitor.* TO 'voxtap'@'127.0.0.1';
SQL
{
    echo "# written on first boot, $(date -u +%FT%TZ)"
    echo "mysqlpassword = $DBPW"
    echo "id_sensor = $ID_SENSOR"
} > /etc/voipmonitor.d/10-firstboot.conf
if [ -n "$CAPTURE_PCI" ]; then
    printf 'dpdk = yes\ninterface = dpdk:0\ndpdk_pci_device = %s\n' "$CAPTURE_PCI" > /etc/voipmonitor.d/20-capture.conf
elif [ -n "$CAPTURE_IFACE" ]; then
    printf 'interface = %s\n' "$CAPTURE_IFACE" > /etc/voipmonitor.d/20-capture.conf
else
    printf 'hep = yes\nhep_bind_ip = 0.0.0.0\nhep_bind_port = 9060\n' > /etc/voipmonitor.d/20-capture.conf
fi
if [ -n "$SERVER_DESTINATION" ]; then
    printf 'server_destination = %s\nserver_password = %s\n' "$SERVER_DESTINATION" "$SERVER_PASSWORD" \
        > /etc/voipmonitor.d/30-remote.conf
fi
echo "vm.nr_hugepages = $HUGEPAGES" > /etc/sysctl.d/60-hugepages.conf
sysctl -q -p /etc/sysctl.d/60-hugepages.conf || true
if [ -n "$CAPTURE_PCI" ]; then
    modprobe vfio-pci && dpdk-devbind.py --bind=vfio-pci "$CAPTURE_PCI" || echo "firstboot: binding $CAPTURE_PCI failed"
    echo "vfio-pci" > /etc/modules-load.d/vfio-pci.conf
fi
# The image test: report the CDR count on the console (appliance-cdr-report.service).
[ -n "$SMOKETEST" ] && touch /var/lib/voxtap/smoketest
touch /var/lib/voxtap/firstboot.done
echo "APPLIANCE-FIRSTBOOT-DONE host=$HOSTNAME"
