#!/usr/bin/env python3
"""A switched PDU speaking Modbus, for the Modbus fence driver's tests (hwtests::modbus_pdu).

The driver must be proven against a Modbus stack that is not our own, so this wraps pymodbus's
TCP and serial (RTU) servers around a small outlet model whose state lives in a JSON file that
the test reads and writes between driver calls.

Data model, for every served unit id (each unit has its own outlets):

- coils 0..N-1: outlet i+1, 1 = powered (read FC1, write FC5 / FC15);
- holding registers 100..100+N-1: the same outlets as values, 1 = powered, 2 = off (read FC3,
  write FC6 / FC16); any other value written is stored as it is, to test the driver's check;
- any other coil or register address: exception 2 (illegal data address).

The state file (--state, JSON) holds:

- "outlets": {"<unit>": [v, ...]} with v = 1 (on), 0 (off) or any other register value;
- "stuck": ["<unit>:<outlet index>", ...]: writes to these are acknowledged but change nothing,
  like a welded relay or a PDU that lies;
- "busy": true makes every request answer exception 6 (server device busy);
- "delay_ms": pause before answering each request (longer than the client's timeout makes a
  PDU that never answers);
- "silent_after_write_reads": N: once a write was taken, N more reads are answered, then no
  request is answered any more (a PDU that dies in the middle of a fence);
- "off_hook": a shell script run as `sh SCRIPT <unit> <outlet index>` when a write switches a
  powered outlet off, before the write is answered (the QEMU rig cuts a guest's power with it,
  so an acknowledged off means the machine is really off).

It is read before every request and rewritten (atomically, by rename) after every write, so a
test may change it between calls. Unit ids not in --units get no answer at all, as on an RS-485
bus where no device has that address; a TCP gateway would answer exception 11 instead.

Every accepted write is appended to --log as one line: `unit=U fc=F addr=A value=V`.

When the server listens it creates the --ready file. It listens on 127.0.0.1 only.

usage: modbus_pdu.py (--tcp PORT | --serial PATH [--baud B]) --state FILE --log FILE
                     --ready FILE [--outlets N] [--units 1,2]
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

REGISTER_BASE = 100
REGISTER_ON = 1
REGISTER_OFF = 2
COIL_FUNCTIONS = (1, 5, 15)
REGISTER_FUNCTIONS = (3, 6, 16)
# The longest a silenced server leaves a request unanswered.
SILENCE_SECS = 600


class PduState:
    """The outlet model, backed by the JSON state file."""

    def __init__(self, path, units, outlets, log_path):
        self.path = path
        self.log_path = log_path
        self.count = outlets
        self.units = units
        # The echo of the last single write, answered by the read pymodbus does right after it
        # (a real device echoes the request, also for a stuck outlet).
        self.echo = None
        # Reads answered since the first write; None before it.
        self.reads_after_write = None
        self.doc = {
            "outlets": {str(u): [1] * outlets for u in units},
            "stuck": [],
            "busy": False,
            "delay_ms": 0,
        }
        self.save()

    def load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                self.doc = json.load(f)
        except (OSError, ValueError) as e:
            logging.warning("state file unreadable, keeping the last state: %s", e)

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.doc, f)
        os.replace(tmp, self.path)

    def log_write(self, unit, fc, address, value):
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"unit={unit} fc={fc} addr={address} value={value}\n")


class PduContext(ModbusServerContext):
    """pymodbus's datastore interface over PduState.

    pymodbus hands a context whose `old_simulator` is set straight to its request handlers,
    which call async_getValues / async_setValues with the request's own addresses and counts
    and turn a returned ExcCodes into an exception response.
    """

    def __init__(self, state):  # pylint: disable=super-init-not-called
        # The parent's constructor only builds deprecated simulator devices; none are needed.
        self.state = state
        self.simdevices = []
        self.old_simulator = True

    def device_ids(self):
        return list(self.state.units)

    def _outlets(self, device_id):
        if device_id not in self.state.units:
            raise NoSuchIdException(f"unit {device_id} is not served")
        return self.state.doc["outlets"][str(device_id)]

    def _index(self, func_code, address, count):
        """First outlet index of a request, or None when it leaves the outlet range."""
        base = REGISTER_BASE if func_code in REGISTER_FUNCTIONS else 0
        first = address - base
        if first < 0 or count < 1 or first + count > self.state.count:
            return None
        return first

    async def _prologue(self, device_id):
        self.state.load()
        delay = self.state.doc.get("delay_ms", 0)
        if delay:
            await asyncio.sleep(delay / 1000)
        outlets = self._outlets(device_id)
        if self.state.doc.get("busy"):
            return outlets, ExcCodes.DEVICE_BUSY
        return outlets, None

    async def async_getValues(self, device_id, func_code, address, count=1):
        if func_code in (5, 6) and self.state.echo is not None:
            echo, self.state.echo = self.state.echo, None
            return echo
        outlets, exc = await self._prologue(device_id)
        if exc is not None:
            return exc
        await self._silence_if_due(counted=True)
        if func_code not in COIL_FUNCTIONS + REGISTER_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        first = self._index(func_code, address, count)
        if first is None:
            return ExcCodes.ILLEGAL_ADDRESS
        values = outlets[first : first + count]
        if func_code in COIL_FUNCTIONS:
            return [v == 1 for v in values]
        return [REGISTER_ON if v == 1 else REGISTER_OFF if v == 0 else v for v in values]

    async def _silence_if_due(self, counted):
        """Never returns once the configured number of reads after a write was answered;
        counts a read (`counted`) otherwise."""
        limit = self.state.doc.get("silent_after_write_reads")
        if limit is None or self.state.reads_after_write is None:
            return
        if self.state.reads_after_write >= limit:
            # Bounded; the harness stops the server by PID long before.
            await asyncio.sleep(SILENCE_SECS)
        if counted:
            self.state.reads_after_write += 1

    async def async_setValues(self, device_id, func_code, address, values):
        outlets, exc = await self._prologue(device_id)
        if exc is not None:
            return exc
        await self._silence_if_due(counted=False)
        if self.state.reads_after_write is None:
            self.state.reads_after_write = 0
        if func_code not in COIL_FUNCTIONS + REGISTER_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        first = self._index(func_code, address, len(values))
        if first is None:
            return ExcCodes.ILLEGAL_ADDRESS
        stuck = set(self.state.doc.get("stuck", []))
        for i, value in enumerate(values):
            if func_code in COIL_FUNCTIONS:
                stored = 1 if value else 0
                logged = int(bool(value))
            else:
                stored = {REGISTER_ON: 1, REGISTER_OFF: 0}.get(int(value), int(value))
                logged = int(value)
            self.state.log_write(device_id, func_code, address + i, logged)
            if f"{device_id}:{first + i}" not in stuck:
                hook = self.state.doc.get("off_hook")
                if hook and outlets[first + i] == 1 and stored == 0:
                    subprocess.run(["sh", hook, str(device_id), str(first + i)], timeout=10, check=False)
                outlets[first + i] = stored
        self.state.save()
        if func_code in (5, 6):
            self.state.echo = list(values)
        return None


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=int, metavar="PORT")
    where.add_argument("--serial", metavar="PATH")
    ap.add_argument("--baud", type=int, default=19200)
    ap.add_argument("--outlets", type=int, default=8)
    ap.add_argument("--units", default="1")
    ap.add_argument("--state", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--ready", required=True)
    return ap.parse_args()


async def main():
    args = parse_args()
    units = [int(u) for u in args.units.split(",") if u]
    state = PduState(args.state, units, args.outlets, args.log)
    context = PduContext(state)
    if args.tcp is not None:
        server = ModbusTcpServer(
            context, address=("127.0.0.1", args.tcp), ignore_missing_devices=True
        )
    else:
        server = ModbusSerialServer(
            context,
            port=args.serial,
            baudrate=args.baud,
            bytesize=8,
            parity="N",
            stopbits=1,
            ignore_missing_devices=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await server.serve_forever(background=True)
    with open(args.ready, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    await stop.wait()
    await server.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    # pymodbus warns on every use of the datastore interface; its errors still show.
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    asyncio.run(main())
