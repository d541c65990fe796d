#!/bin/bash
# HIL: CAN traffic into the board's interface (vcan0) as a transient unit.
#   replay.sh start UNIT CAPTURE    canplayer replaying a candump -l capture, forever; when the
#                                   interface goes down canplayer exits ("Network is down"),
#                                   like a node that stops sending, and is started again every
#                                   second until the interface is back
#   replay.sh flood UNIT FPS        cangen: FPS frames/s (bursts every millisecond) of 29-bit,
#                                   8-byte frames, the cheapest generator there is
#   replay.sh stop UNIT
set -eu
iface=$(sed -n 's/^interface *= *"\(.*\)"/\1/p' /etc/harmony/board.toml | head -n1)
case $1 in
    start)
        systemctl stop "$2" 2>/dev/null || true
        systemctl reset-failed "$2" 2>/dev/null || true
        systemd-run --quiet --unit="$2" --description="HIL: canplayer $(basename "$3")" \
            /bin/bash -c "while :; do /usr/bin/canplayer -l i -I '$3' '$iface=slcan0'; sleep 1; done"
        ;;
    flood)
        systemctl stop "$2" 2>/dev/null || true
        systemctl reset-failed "$2" 2>/dev/null || true
        systemd-run --quiet --unit="$2" --description="HIL: cangen $3 frames/s" \
            /usr/bin/cangen "$iface" -g 1 -c $(($3 / 1000)) -e -I 18FEF100 -L 8 -D i -i
        ;;
    stop)
        systemctl stop "$2" 2>/dev/null || true
        ;;
esac
