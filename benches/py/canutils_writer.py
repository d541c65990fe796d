"""python-can's CanutilsLogWriter (the ecosystem's candump-format writer) writing N frames.

Usage: canutils_writer.py N OUT_FILE  -> prints frames/s. The messages are built before the
clock starts, so only the writer is timed (like the Rust side, whose records exist before they
are logged).
"""
import sys
import time

import can

n = int(sys.argv[1])
out = sys.argv[2]
msgs = [
    can.Message(
        timestamp=1_700_000_000 + i * 1e-6,
        arbitration_id=0x10000000 | (i & 0xFFFFFF),
        is_extended_id=True,
        data=i.to_bytes(8, "little"),
        channel="can0",
    )
    for i in range(n)
]
w = can.CanutilsLogWriter(out, channel="can0")
t0 = time.perf_counter()
for m in msgs:
    w.on_message_received(m)
w.stop()
dt = time.perf_counter() - t0
print(f"{n / dt:.0f}")
