#!/usr/bin/env bash
# Applies the Concurrent Harmony board settings to Debian's bcm2711-rpi-4-b.dtb with fdtput
# (device-tree-compiler), in place:
#
#   patch-rpi4b-dtb.sh DTB CHANGES.txt [--can-oscillator HZ] [--can-interrupt GPIO]
#                      [--can-spi-hz HZ] [--no-can-hat]
#
# Debian's DTB has no __symbols__ node, so the firmware cannot apply dtoverlay= lines and
# fdtoverlay cannot resolve labels. Every change below addresses nodes by path and phandles by
# number, and says which Raspberry Pi OS config.txt line it replaces:
#
#   dtoverlay=disable-bt        the PL011 (ttyAMA0) moves to GPIO 14/15, Bluetooth's serdev
#                               node and the mini UART are disabled, no serial console
#   dtparam=i2c_arm=on          I2C1 on GPIO 2/3 is already on in Debian's DTB; aliases
#                               i2c0/i2c1 pin the bus numbers (/dev/i2c-1 is always GPIO 2/3)
#   dtparam=i2c_arm_baudrate=400000
#   dtparam=spi=on + dtoverlay=mcp2515-can0,oscillator=16000000,interrupt=25
#                               SPI0 on with GPIO chip selects (CE0 = GPIO 8, CE1 = GPIO 7),
#                               an MCP2515 on CE0 with its crystal and its INT line
#
# The result is decompiled with dtc as a check; CHANGES.txt records what was done.
set -euo pipefail

dtb=${1:?usage: patch-rpi4b-dtb.sh DTB CHANGES.txt [options]}
changes=${2:?usage: patch-rpi4b-dtb.sh DTB CHANGES.txt [options]}
shift 2
osc=16000000
irq=25
spi_hz=10000000
can=true
while [ $# -gt 0 ]; do
    case $1 in
        --can-oscillator) osc=$2; shift 2 ;;
        --can-interrupt) irq=$2; shift 2 ;;
        --can-spi-hz) spi_hz=$2; shift 2 ;;
        --no-can-hat) can=false; shift ;;
        *) echo "patch-rpi4b-dtb.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

gpio=/soc/gpio@7e200000
uart0=/soc/serial@7e201000  # PL011
uart1=/soc/serial@7e215040  # mini UART
i2c0=/soc/i2c@7e205000
i2c1=/soc/i2c@7e804000
spi0=/soc/spi@7e204000

need_node() {
    fdtget "$dtb" "$1" compatible >/dev/null 2>&1 || fdtget -l "$dtb" "$1" >/dev/null 2>&1 || {
        echo "patch-rpi4b-dtb.sh: $dtb has no node $1 (not Debian's bcm2711-rpi-4-b.dtb?)" >&2
        exit 1
    }
}
for n in $gpio $uart0 $uart1 $i2c0 $i2c1 $spi0 $gpio/uart0_gpio14 /aliases /chosen; do
    need_node "$n"
done
fdtget "$dtb" / compatible | grep -q 'raspberrypi,4-model-b' || {
    echo "patch-rpi4b-dtb.sh: $dtb is not a Raspberry Pi 4 Model B device tree" >&2
    exit 1
}

# Highest phandle in use; the new ones are last+1 .. last+5.
last=$(dtc -I dtb -O dts -q "$dtb" | sed -n 's/.*phandle = <\(0x[0-9a-f]*\)>;.*/\1/p' |
    while read -r h; do printf '%d\n' "$h"; done | sort -n | tail -n1)
gpio_ph=$(fdtget -t u "$dtb" $gpio phandle)

: >"$changes"
note() { echo "$*" >>"$changes"; }
note "# Changes made by image/dt/patch-rpi4b-dtb.sh to Debian's bcm2711-rpi-4-b.dtb"
note "# (sha256 before: $(sha256sum "$dtb" | cut -d' ' -f1))"

# --- UART: PL011 on GPIO 14/15 (dtoverlay=disable-bt) ---------------------------------------
u0pins=$((last + 1))
fdtput -t u "$dtb" $gpio/uart0_gpio14 phandle "$u0pins"
fdtput -t u "$dtb" $uart0 pinctrl-0 "$u0pins"
fdtput -d "$dtb" $uart0 uart-has-rtscts
if fdtget "$dtb" $uart0/bluetooth compatible >/dev/null 2>&1; then
    fdtput -t s "$dtb" $uart0/bluetooth status disabled
fi
fdtput -t s "$dtb" $uart1 status disabled
fdtput -d "$dtb" /chosen stdout-path 2>/dev/null || true
note "uart:  $uart0 (PL011, ttyAMA0, alias serial0) pinctrl -> $gpio/uart0_gpio14 (GPIO 14/15 alt0),"
note "       no RTS/CTS, Bluetooth node disabled; $uart1 (mini UART) disabled; /chosen stdout-path removed"

# --- I2C: fixed bus numbers, 400 kHz on I2C1 ------------------------------------------------
fdtput -t s "$dtb" /aliases i2c0 "$i2c0"
fdtput -t s "$dtb" /aliases i2c1 "$i2c1"
fdtput -t u "$dtb" $i2c1 clock-frequency 400000
note "i2c:   aliases i2c0 = $i2c0 (GPIO 0/1), i2c1 = $i2c1 (GPIO 2/3, /dev/i2c-1), i2c1 at 400 kHz"

# --- SPI0 + MCP2515 CAN controller (dtoverlay=mcp2515-can0) ---------------------------------
if $can; then
    spi_pins=$((last + 2))
    cs_pins=$((last + 3))
    int_pins=$((last + 4))
    osc_ph=$((last + 5))
    fdtput -c "$dtb" $gpio/harmony_spi0_pins $gpio/harmony_spi0_cs_pins $gpio/harmony_can0_pins
    # MISO, MOSI, SCLK on alt0; the chip selects as GPIO outputs (driven by the SPI core).
    fdtput -t u "$dtb" $gpio/harmony_spi0_pins brcm,pins 9 10 11
    fdtput -t u "$dtb" $gpio/harmony_spi0_pins brcm,function 4
    fdtput -t u "$dtb" $gpio/harmony_spi0_pins phandle "$spi_pins"
    fdtput -t u "$dtb" $gpio/harmony_spi0_cs_pins brcm,pins 8 7
    fdtput -t u "$dtb" $gpio/harmony_spi0_cs_pins brcm,function 1
    fdtput -t u "$dtb" $gpio/harmony_spi0_cs_pins phandle "$cs_pins"
    # The MCP2515's INT line: input (its pull-up is on the HAT).
    fdtput -t u "$dtb" $gpio/harmony_can0_pins brcm,pins "$irq"
    fdtput -t u "$dtb" $gpio/harmony_can0_pins brcm,function 0
    fdtput -t u "$dtb" $gpio/harmony_can0_pins phandle "$int_pins"

    fdtput -c "$dtb" /harmony-can0-osc
    fdtput -t s "$dtb" /harmony-can0-osc compatible fixed-clock
    fdtput -t u "$dtb" /harmony-can0-osc '#clock-cells' 0
    fdtput -t u "$dtb" /harmony-can0-osc clock-frequency "$osc"
    fdtput -t u "$dtb" /harmony-can0-osc phandle "$osc_ph"

    fdtput -t s "$dtb" $spi0 status okay
    fdtput -t s "$dtb" $spi0 pinctrl-names default
    fdtput -t u "$dtb" $spi0 pinctrl-0 "$spi_pins" "$cs_pins"
    # <&gpio 8 GPIO_ACTIVE_LOW>, <&gpio 7 GPIO_ACTIVE_LOW>
    fdtput -t u "$dtb" $spi0 cs-gpios "$gpio_ph" 8 1 "$gpio_ph" 7 1

    fdtput -c "$dtb" $spi0/can@0
    fdtput -t s "$dtb" $spi0/can@0 compatible microchip,mcp2515
    fdtput -t u "$dtb" $spi0/can@0 reg 0
    fdtput -t s "$dtb" $spi0/can@0 pinctrl-names default
    fdtput -t u "$dtb" $spi0/can@0 pinctrl-0 "$int_pins"
    fdtput -t u "$dtb" $spi0/can@0 spi-max-frequency "$spi_hz"
    fdtput -t u "$dtb" $spi0/can@0 clocks "$osc_ph"
    fdtput -t u "$dtb" $spi0/can@0 interrupt-parent "$gpio_ph"
    # IRQ_TYPE_LEVEL_LOW = 8
    fdtput -t u "$dtb" $spi0/can@0 interrupts "$irq" 8
    note "spi:   $spi0 enabled, MISO/MOSI/SCLK = GPIO 9/10/11 (alt0), cs-gpios CE0 = GPIO 8, CE1 = GPIO 7"
    note "can:   $spi0/can@0: microchip,mcp2515 on CE0, crystal /harmony-can0-osc = $osc Hz,"
    note "       INT = GPIO $irq (level low), SPI clock $spi_hz Hz -> mcp251x driver -> can0"
else
    note "can:   no CAN HAT configured (--no-can-hat): SPI0 stays disabled"
fi

# Check: the result still decompiles.
dtc -I dtb -O dts -q "$dtb" >/dev/null
note "# (sha256 after: $(sha256sum "$dtb" | cut -d' ' -f1))"
