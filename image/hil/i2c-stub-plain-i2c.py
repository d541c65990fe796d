#!/usr/bin/env python3
"""Adds plain I2C transfers to the kernel's i2c-stub.c (drivers/i2c/i2c-stub.c of Linux 6.1).

    i2c-stub-plain-i2c.py IN.c OUT.c

The stock i2c-stub only implements SMBus commands (adapter->algo->smbus_xfer). The firmware's
rangefinder driver talks to the LIDAR-Lite v3 the way Garmin's own libraries do: a plain
write() of [register, value], or of [register] followed by a separate plain read() (the v3
does not support repeated START). On /dev/i2c-N those are I2C messages (i2c_transfer), which
the stock stub refuses with EOPNOTSUPP: "I2C level transfers not supported".

This adds a master_xfer with the register model the stub's SMBus side already has (and that
most register-based sensors, the LIDAR-Lite among them, follow): in a write, the first byte
sets the chip's register pointer and further bytes are stored from it on, auto-incrementing;
a read returns bytes from the pointer on, auto-incrementing. It stores into the same
chip->words[] the SMBus commands use, so i2cset/i2cget (SMBus) and plain transfers see the
same registers. An address without a chip answers -ENXIO (a NACK, as real adapters report).
It does not model anything sensor-specific: the LIDAR-Lite's "bit 7 = auto-increment"
register 0x8f is simply register 0x8f here, so the rig pre-sets 0x8f/0x90 with the distance.

Registers are reached through the stub's own stub_get_wordp() (the selected bank, when the
bank_* module parameters configure banks; a plain write to the bank register does not switch
banks, unlike the SMBus path: the rig uses no banks). If the source defines
DEBUG (older kernels did), that line is dropped: it would log every transfer.

Each edit is anchored on the 6.1 source and fails loudly when the anchor is missing.
"""
import sys

src_path, out_path = sys.argv[1], sys.argv[2]
s = open(src_path).read()


def replace_once(text, old, new, what):
    if text.count(old) != 1:
        sys.exit(f"i2c-stub-plain-i2c.py: anchor for {what} not found exactly once")
    return text.replace(old, new)


XFER = r'''
/*
 * Plain I2C messages (read()/write() on /dev/i2c-N, I2C_RDWR), added by Concurrent Harmony's
 * image/hil/i2c-stub-plain-i2c.py: a write's first byte sets the register pointer, further
 * bytes are written from it on; a read returns bytes from the pointer on; both
 * auto-increment. Same registers as the SMBus commands (stub_get_wordp(), low byte).
 */
static int stub_i2c_xfer(struct i2c_adapter *adap, struct i2c_msg *msgs, int num)
{
	int m, i;

	for (m = 0; m < num; m++) {
		struct i2c_msg *msg = &msgs[m];
		struct stub_chip *chip = NULL;

		for (i = 0; i < stub_chips_nr; i++) {
			if (msg->addr == chip_addr[i]) {
				chip = stub_chips + i;
				break;
			}
		}
		if (!chip)
			return -ENXIO;

		if (msg->flags & I2C_M_RD) {
			for (i = 0; i < msg->len; i++)
				msg->buf[i] = *stub_get_wordp(chip, chip->pointer++) & 0xff;
		} else if (msg->len > 0) {
			chip->pointer = msg->buf[0];
			for (i = 1; i < msg->len; i++) {
				u16 *wordp = stub_get_wordp(chip, chip->pointer++);

				*wordp = (*wordp & 0xff00) | msg->buf[i];
			}
		}
	}
	return num;
}

static u32 stub_func(struct i2c_adapter *adapter)'''

s = s.replace("#define DEBUG 1\n", "")
if "static u16 *stub_get_wordp(" not in s:
    sys.exit("i2c-stub-plain-i2c.py: no stub_get_wordp() in the source (not Linux 6.1's i2c-stub.c?)")
s = replace_once(s, "\nstatic u32 stub_func(struct i2c_adapter *adapter)", XFER, "stub_func")
s = replace_once(
    s,
    "return STUB_FUNC_ALL & functionality;",
    "return (STUB_FUNC_ALL & functionality) | I2C_FUNC_I2C;",
    "stub_func's return",
)
s = replace_once(
    s,
    "\t.smbus_xfer\t= stub_xfer,\n",
    "\t.smbus_xfer\t= stub_xfer,\n\t.master_xfer\t= stub_i2c_xfer,\n",
    "smbus_algorithm",
)
open(out_path, "w").write(s)
