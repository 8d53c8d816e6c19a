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
units=(voxtap-appliance.service voxtap-hugepages.service voxtap-nics.service voxtap.service)
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
# ... and, where it keeps a database, has made its tables and registered itself (the cdr tables come with the
# first CDR, partitioned from its day).
if [ "$MODE" != remote ]; then
    ok=0
    for _ in $(seq 30); do
        [ "$(mariadb -N -e "SELECT COUNT(*) FROM voipmonitor.sensors" 2> /dev/null)" -ge 1 ] 2> /dev/null && ok=1 && break
        sleep 1
    done
    [ $ok = 1 ] || check "voxtap has not registered in voipmonitor.sensors"
fi
! ldd /usr/bin/dpdk-testpmd | grep -q "not found" || check "dpdk-testpmd lacks libraries: $(ldd /usr/bin/dpdk-testpmd | grep 'not found' | tr -s ' \t' ' ')"
grep -q "voxtap appliance" /etc/issue || check "the console banner (/etc/issue) is missing"
dpdk-devbind.py --status-dev net 2>&1 | sed 's/^/devbind: /' | head -8
echo "APPLIANCE-INFO: hugepages=$(awk '/HugePages_Total/ {print $2}' /proc/meminfo) time-sync=$(systemctl is-active systemd-timesyncd.service) journal=$(journalctl --disk-usage 2> /dev/null | grep -o '[0-9.]*[KMG]' | head -n 1)"
echo "APPLIANCE-INFO: failed-units=$(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
echo "APPLIANCE-INFO: root=$(findmnt -no SOURCE,SIZE / 2> /dev/null | tr -s ' ') kernel=$(uname -r)"
echo "APPLIANCE-INFO: cmdline=$(cat /proc/cmdline)"
if [ "$fail" = 0 ]; then
    echo "APPLIANCE-READY"
else
    journalctl -u voxtap.service -u voxtap-appliance.service -u voxtap-nics.service -n 30 --no-pager | sed 's/^/journal: /'
    echo "APPLIANCE-FAILED"
fi
grep -q 'appliance.smoketest=poweroff' /proc/cmdline && systemctl poweroff
exit 0
