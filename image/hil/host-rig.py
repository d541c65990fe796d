#!/usr/bin/env python3
"""Host side of one qemu boot of scripts/hil-qemu.sh.

    host-rig.py --work DIR --gps-log NMEA_FILE [--ground HARMONY_BIN] [--timeout S]
                [--powercut-delay-max S] -- QEMU ARGS...

Starts qemu-system-aarch64 with the given arguments plus a QMP socket and a console log
file, then:
  * reads the guest's pseudo-terminals from QMP (query-chardev): "gps0" (the 16550
    on PCI that is the GPS UART) and "radio0" (the usb-serial that is the telemetry radio);
  * GPS simulator: writes the NMEA capture's sentences ('#' lines skipped) into gps0 at the
    capture's own pace (each new UTC time in a sentence starts a new epoch: 0.2 s at 5 Hz),
    looping, without blocking (a GPS talks whether anyone listens or not);
  * ground station: runs `harmony ground --port <radio0> --plain` (the host x86_64 binary),
    its output into DIR/ground.log;
  * follows the console (DIR/console.log) and acts on the guest's "@@HIL" lines:
      request gps-unplug   QMP device_del gpsdev    (PCIe hot-unplug: ttyS0 goes away)
      request gps-replug   QMP device_add pci-serial,chardev=gps0,bus=rp1,id=gpsdev
      powercut             SIGKILL to qemu after a random 0..S s: the power is cut
      MARKER of --exec-at  runs that command (in the background), e.g. ssh into the guest
  * stops at qemu's exit (the guest powers off) or at the timeout (kills qemu: a failure).
Writes DIR/rig.json: what happened when (seconds since qemu started) and how it ended.
"""
import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import tty

ap = argparse.ArgumentParser()
ap.add_argument("--work", required=True)
ap.add_argument("--gps-log", required=True)
ap.add_argument("--ground")
ap.add_argument("--timeout", type=float, default=900)
ap.add_argument("--powercut-delay-max", type=float, default=1.0)
ap.add_argument("--quiet", action="store_true")
ap.add_argument("--exec-at", nargs=2, action="append", default=[], metavar=("MARKER", "CMD"),
                help="run CMD (bash) when the guest prints '@@HIL MARKER'; its exit status goes into rig.json")
ap.add_argument("qemu", nargs=argparse.REMAINDER)
a = ap.parse_args()
qemu_args = a.qemu[1:] if a.qemu and a.qemu[0] == "--" else a.qemu

work = a.work
mon_path = os.path.join(work, "qmp.sock")
console_path = os.path.join(work, "console.log")
for p in (mon_path, console_path):
    if os.path.exists(p):
        os.unlink(p)
open(console_path, "w").close()

T0 = time.monotonic()
events = []
stop = threading.Event()


def now():
    return round(time.monotonic() - T0, 2)


def event(kind, **kw):
    e = {"t": now(), "event": kind, **kw}
    events.append(e)
    if not a.quiet:
        print(f"[host {e['t']:7.1f}s] {kind} {' '.join(f'{k}={v}' for k, v in kw.items())}", flush=True)


cmd = qemu_args + [
    "-qmp", f"unix:{mon_path},server=on,wait=off",
    "-serial", f"file:{console_path}",
]
qemu = subprocess.Popen(cmd, stdout=open(os.path.join(work, "qemu.out"), "w"), stderr=subprocess.STDOUT)
event("qemu-started", pid=qemu.pid)


class Qmp:
    """QEMU's machine protocol (JSON) on a unix socket."""

    def __init__(self, path):
        for _ in range(100):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("host-rig: cannot connect to qemu's QMP socket")
        self.f = self.s.makefile("rw")
        self.lock = threading.Lock()
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        with self.lock:
            self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
            self.f.flush()
            while True:
                r = json.loads(self.f.readline())
                if "return" in r:
                    return r["return"]
                if "error" in r:
                    return {"error": r["error"].get("desc", r["error"])}
                # an asynchronous event: keep it for the record
                events.append({"t": now(), "event": "qmp", "qmp": r.get("event"), "data": r.get("data")})


mon = Qmp(mon_path)
chardevs = {}
for c in mon.cmd("query-chardev"):
    if c.get("filename", "").startswith("pty:"):
        chardevs[c["label"]] = c["filename"][4:]

# --- GPS simulator ------------------------------------------------------------------------
def nmea_epochs(path):
    """Sentences grouped by epoch: a sentence with a new UTC time starts a new one."""
    epochs, cur, last_t = [], [], None
    for raw in open(path, "rb"):
        if raw.startswith(b"#") or not raw.strip():
            continue
        line = raw.rstrip(b"\r\n") + b"\r\n"
        f = line.split(b",")
        t = None
        if len(f) > 1 and f[0][3:6] in (b"RMC", b"GGA", b"GLL", b"ZDA", b"GNS", b"GST"):
            idx = 5 if f[0][3:6] == b"GLL" else 1
            if len(f) > idx and re.match(rb"^\d{6}(\.\d+)?$", f[idx]):
                t = f[idx]
        if t is not None and t != last_t and cur and last_t is not None:
            epochs.append(cur)
            cur = []
        if t is not None:
            last_t = t
        cur.append(line)
    if cur:
        epochs.append(cur)
    return epochs


gps_stats = {"epochs": 0, "bytes": 0, "dropped_bytes": 0, "loops": 0}


def gps_feeder(path, epochs, period=0.2):
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    nxt = time.monotonic()
    while not stop.is_set():
        gps_stats["loops"] += 1
        for ep in epochs:
            if stop.is_set():
                break
            data = b"".join(ep)
            try:
                n = os.write(fd, data)
                gps_stats["bytes"] += n
                gps_stats["dropped_bytes"] += len(data) - n
            except (BlockingIOError, OSError):
                gps_stats["dropped_bytes"] += len(data)
            # Whatever the guest did not read sits in the pty; drain what the guest sent us.
            try:
                while os.read(fd, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            gps_stats["epochs"] += 1
            nxt += period
            d = nxt - time.monotonic()
            if d > 0:
                stop.wait(d)
            else:
                nxt = time.monotonic()


epochs = nmea_epochs(a.gps_log)
event("gps-simulator", sentences=sum(len(e) for e in epochs), epochs=len(epochs))
threading.Thread(target=gps_feeder, args=(chardevs["gps0"], epochs), daemon=True).start()

# --- ground station -----------------------------------------------------------------------
ground = None
if a.ground and "radio0" in chardevs:
    ground = subprocess.Popen(
        [a.ground, "ground", "--port", chardevs["radio0"], "--plain"],
        stdin=subprocess.PIPE,
        stdout=open(os.path.join(work, "ground.log"), "w"),
        stderr=open(os.path.join(work, "ground.err"), "w"),
    )
    event("ground-started", pid=ground.pid, port=chardevs["radio0"])

# --- console and the guest's requests -------------------------------------------------------
outcome = None
markers = {}


exec_results = []


def run_exec(marker, command):
    t = now()
    r = subprocess.run(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exec_results.append({"marker": marker, "t": t, "seconds": round(now() - t, 1), "exit": r.returncode, "output": r.stdout[-4000:]})
    event("exec", marker=marker, exit=r.returncode)


def handle(line):
    global outcome
    m = re.search(r"@@HIL (.*)", line)
    if not m:
        return
    msg = m.group(1).strip()
    words = msg.split()
    if not a.quiet:
        print(f"[guest {now():6.1f}s] {msg}", flush=True)
    key = words[0] if words[0] != "request" else "request " + (words[1] if len(words) > 1 else "")
    markers.setdefault(key, now())
    if words[:2] == ["request", "gps-unplug"]:
        r = mon.cmd("device_del", id="gpsdev")
        event("gps-unplugged", qmp=json.dumps(r))
    elif words[:2] == ["request", "gps-replug"]:
        r = mon.cmd("device_add", driver="pci-serial", chardev="gps0", bus="rp1", id="gpsdev")
        event("gps-replugged", qmp=json.dumps(r))
    for marker, command in a.exec_at:
        if msg == marker:
            threading.Thread(target=run_exec, args=(marker, command), daemon=True).start()
    if words[0] == "powercut":
        d = random.uniform(0, a.powercut_delay_max)
        time.sleep(d)
        qemu.send_signal(signal.SIGKILL)
        outcome = "powercut"
        event("power-cut", after_marker_s=round(d, 2))


def follow_console():
    with open(console_path, "rb") as f:
        buf = b""
        while True:
            chunk = f.read(65536)
            if chunk:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    handle(line.decode(errors="replace"))
            elif qemu.poll() is not None:
                rest = f.read()
                for line in (buf + rest).split(b"\n"):
                    handle(line.decode(errors="replace"))
                return
            else:
                time.sleep(0.05)


cons = threading.Thread(target=follow_console, daemon=True)
cons.start()
deadline = T0 + a.timeout
while qemu.poll() is None and time.monotonic() < deadline:
    time.sleep(0.2)
if qemu.poll() is None:
    qemu.kill()
    qemu.wait()
    outcome = "timeout"
    event("timeout", seconds=a.timeout)
cons.join(timeout=10)
if outcome is None:
    outcome = "poweroff" if "done" in markers else f"qemu-exit-{qemu.returncode}"
event("qemu-exited", code=qemu.returncode, outcome=outcome)
stop.set()
if ground:
    ground.terminate()
    try:
        ground.wait(timeout=5)
    except subprocess.TimeoutExpired:
        ground.kill()

json.dump(
    {"outcome": outcome, "markers": markers, "events": events, "gps": gps_stats, "ptys": chardevs,
     "exec": exec_results},
    open(os.path.join(work, "rig.json"), "w"),
    indent=1,
)
sys.exit(0 if outcome in ("poweroff", "powercut") else 1)
