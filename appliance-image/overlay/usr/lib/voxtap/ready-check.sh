#!/bin/bash
# After boot: is everything up? One line on the console, APPLIANCE-READY or APPLIANCE-FAILED (the image test waits
# for it); with appliance.smoketest=poweroff on the kernel command line the machine then powers off.
set -u
fail=0
check() {
    echo "APPLIANCE-CHECK: $*"
    fail=1
}
MODE=$(sed -n 's/^[[:space:]]*MODE[[:space:]]*=[[:space:]]*//p' /etc/voxtap/appliance.conf | tail -n 1)
CONF=/etc/voxtap/voxtap.conf
[ -e /var/lib/voxtap/firstboot.done ] || check "first boot not done"
units=(voxtap-appliance.service voxtap.service)
[ "$MODE" = remote ] || units+=(mariadb.service)
for u in "${units[@]}"; do
    systemctl is-active --quiet "$u" || check "$u is $(systemctl is-active "$u")"
done
if [ "$MODE" != remote ]; then
    mariadb-admin ping > /dev/null 2>&1 || check "mariadb does not answer"
fi
# voxtap answers its manager port (sealed with the appliance's manager_key) ...
v=""
for _ in $(seq 30); do
    v=$(voxtap --config-file "$CONF" --manager-client 127.0.0.1:5029 --command getversion 2> /dev/null) && [ -n "$v" ] && break
    sleep 1
done
[ -n "$v" ] && echo "APPLIANCE-INFO: voxtap $v, mode $MODE, user $(ps -o user= -C voxtap | head -n 1)" || check "voxtap's manager port does not answer"
# ... and has created its tables where it keeps a database.
if [ "$MODE" != remote ]; then
    ok=0
    for _ in $(seq 30); do
        mariadb -N -e "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='voipmonitor' AND TABLE_NAME IN ('cdr','cdr_next','cdr_rtp','sensors')" | grep -qx 4 && ok=1 && break
        sleep 1
    done
    [ $ok = 1 ] || check "voxtap's tables are missing"
fi
dpdk-devbind.py --status-dev net 2>&1 | sed 's/^/devbind: /' | head -8
echo "APPLIANCE-INFO: hugepages=$(awk '/HugePages_Total/ {print $2}' /proc/meminfo) time-sync=$(systemctl is-active systemd-timesyncd.service) journal=$(journalctl --disk-usage 2> /dev/null | grep -o '[0-9.]*[KMG]' | head -n 1)"
echo "APPLIANCE-INFO: failed-units=$(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
echo "APPLIANCE-INFO: root=$(findmnt -no SOURCE,SIZE / 2> /dev/null | tr -s ' ') kernel=$(uname -r)"
if [ "$fail" = 0 ]; then
    echo "APPLIANCE-READY"
else
    journalctl -u voxtap.service -u voxtap-appliance.service -n 30 --no-pager | sed 's/^/journal: /'
    echo "APPLIANCE-FAILED"
fi
grep -q 'appliance.smoketest=poweroff' /proc/cmdline && systemctl poweroff
exit 0
