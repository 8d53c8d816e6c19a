#!/bin/sh
# After boot: is everything up? One line on the console, APPLIANCE-READY or APPLIANCE-FAILED (the smoke test
# waits for it); with appliance.smoketest=poweroff on the kernel command line the machine then powers off.
set -u
fail=0
check() { echo "APPLIANCE-CHECK: $*"; fail=1; }
[ -e /var/lib/voxtap/firstboot.done ] || check "first boot not done"
for u in mariadb.service voxtap.service; do
    systemctl is-active --quiet "$u" || check "$u is $(systemctl is-active "$u")"
done
mariadb-admin ping > /dev/null 2>&1 || check "mariadb does not answer"
# voxtap answers its manager port and has created its tables.
i=0
until v=$(voxtap --manager-client 127.0.0.1:5029 --command getversion 2> /dev/null) && [ -n "$v" ]; do
    i=$((i + 1)); [ $i -ge 30 ] && break; sleep 1
done
[ -n "${v:-}" ] && echo "APPLIANCE-INFO: voxtap $v" || check "voxtap's manager port does not answer"
i=0
until mariadb -N -e "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='voipmonitor' AND TABLE_NAME='sensors'" | grep -qx 1; do
    i=$((i + 1)); [ $i -ge 30 ] && { check "voxtap's tables are missing"; break; }; sleep 1
done
dpdk-devbind.py --status-dev net 2>&1 | sed 's/^/devbind: /' | head -8
echo "APPLIANCE-INFO: failed-units=$(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
echo "APPLIANCE-INFO: root=$(findmnt -no SOURCE,SIZE / 2> /dev/null | tr -s ' ') kernel=$(uname -r)"
if [ "$fail" = 0 ]; then echo "APPLIANCE-READY"; else echo "APPLIANCE-FAILED"; fi
grep -q 'appliance.smoketest=poweroff' /proc/cmdline && systemctl poweroff
exit 0
