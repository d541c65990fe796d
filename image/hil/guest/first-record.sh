#!/bin/bash
# HIL: polls (every 50 ms) for the first record in a log file of a session that did not exist
# before this boot's harmony started, and notes the kernel uptime then. The logger fsyncs at
# most a second later.
d=/var/lib/harmony
R=/run/hil/results
found=
while [ -z "$found" ]; do
    for s in "$d"/*/; do
        s=${s%/}
        grep -qxF "${s##*/}" "$R/sessions-before.txt" 2>/dev/null && continue
        for f in "$s"/can.*.log "$s"/gps.*.nmea "$s"/gps-fix.*.csv "$s"/rangefinder.*.csv; do
            [ -s "$f" ] || continue
            case $f in
                *.csv) [ "$(head -c 8192 "$f" | wc -l)" -ge 2 ] && found=$f ;;
                *) found=$f ;;
            esac
            [ -n "$found" ] && break 2
        done
    done
    [ -n "$found" ] || sleep 0.05
done
t=$(cut -d' ' -f1 /proc/uptime)
echo "first_record_uptime=$t" >>"$R/summary.txt"
echo "first_record_file=${found#"$d"/}" >>"$R/summary.txt"
echo "@@HIL first-record $t ${found#"$d"/}" >/dev/console
