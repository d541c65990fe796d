#!/bin/bash
# HIL: changes the stub LIDAR-Lite's distance once a second (30..250 cm, a slow climb and
# descent), through the SMBus side of i2c-stub (i2cset). Only the low byte changes (the high
# byte stays 0), so a reading never mixes two values.
bus=$1
i=0
while :; do
    t=$((i % 44))
    [ $t -lt 22 ] && cm=$((30 + t * 10)) || cm=$((30 + (44 - t) * 10))
    i2cset -y "$bus" 0x62 0x90 "$cm" 2>/dev/null
    i2cset -y "$bus" 0x62 0x10 "$cm" 2>/dev/null
    i=$((i + 1))
    sleep 1
done
