#!/usr/bin/python3
"""net-snmp pass_persist backend for hwtests::snmpd: a switched PDU or a switch's IF-MIB.

Run by snmpd, one process per registered subtree:

    pass_persist .1.3.6.1.4.1.318   python3 snmp_passpersist.py STATE pdu apc-masterswitch
    pass_persist .1.3.6.1.4.1.318   python3 snmp_passpersist.py STATE pdu apc-rpdu
    pass_persist .1.3.6.1.4.1.13742 python3 snmp_passpersist.py STATE pdu raritan-px
    pass_persist .1.3.6.1.4.1.534   python3 snmp_passpersist.py STATE pdu eaton-epdu
    pass_persist .1.3.6.1.2.1.2     python3 snmp_passpersist.py STATE ifmib
    pass_persist .1.3.6.1.2.1.31    python3 snmp_passpersist.py STATE ifx

STATE is a JSON file shared by all backends and the test (which reads and writes it):

    {"outlets": {"1": true, ...}, "outlet_names": {"1": "Outlet 1", ...},
     "reboot_until": {"3": <epoch seconds>}, "ports": {"1": true, ...},
     "aliases": {"1": "host1-hba", ...}, "stuck_outlets": [..], "stuck_ports": [..],
     "reboot_secs": 0, "silent_after_set_gets": null}

Every access holds an exclusive flock on STATE.lock and re-reads the file, and every write
replaces it atomically, so the backends and the test never see half a state. Every SET
(accepted or not) is appended to STATE.sets as one line: "<oid> <type> <value> <RESULT>", and
every outlet command to STATE.switches with its time: "<unix time> outlet=N on|off|reboot",
with "-ignored" appended when the outlet is stuck.

Stuck outlets and ports acknowledge SETs but never change, like a welded relay or a switch
that ignores the command.

With "silent_after_set_gets": N, a backend that has taken a SET answers N more get or getnext
commands (snmpd reads each varbind before it writes it, so a second SET counts one), then
stops answering until snmpd exits; snmpd, which waits for its backend, goes silent with it:
an agent that dies in the middle of a fence.

Errors follow what a real agent answers: a SET of the wrong type is wrongType, of a read-only
column notWritable, of a missing row noCreation, of an out-of-range value wrongValue.

Standard library only: snmpd runs it with whatever python3 the machine has.
"""

import fcntl
import json
import os
import sys
import time

STATE = sys.argv[1]
MODE = sys.argv[2]
MODEL = sys.argv[3] if len(sys.argv) > 3 else ""

APC_MS = (1, 3, 6, 1, 4, 1, 318, 1, 1, 4, 4, 2, 1)
APC_RPDU_CTL = (1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 3, 1, 1)
APC_RPDU_STATUS = (1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 5, 1, 1)
RARITAN_CONFIG = (1, 3, 6, 1, 4, 1, 13742, 6, 3, 5, 3, 1)
RARITAN_SWITCH = (1, 3, 6, 1, 4, 1, 13742, 6, 4, 1, 2, 1)
EATON_CONFIG = (1, 3, 6, 1, 4, 1, 534, 6, 6, 7, 6, 1, 1)
EATON_CONTROL = (1, 3, 6, 1, 4, 1, 534, 6, 6, 7, 6, 6, 1)
IF_NUMBER = (1, 3, 6, 1, 2, 1, 2, 1, 0)
IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IFX_ENTRY = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)

# Raritan PDU2-MIB numbers its PDUs (pduId) from 1; Eaton's strappingIndex is 0 for the
# first (or only) unit of a daisy chain.
RARITAN_PDU_ID = 1
EATON_STRAPPING = 0


class Locked:
    """The state file, loaded under the lock; `save()` writes it back before unlocking."""

    def __enter__(self):
        self.lock = open(STATE + ".lock", "a+")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        with open(STATE) as f:
            self.s = json.load(f)
        self.dirty = False
        self.apply_reboots()
        return self

    def __exit__(self, *exc):
        try:
            if self.dirty:
                tmp = STATE + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(self.s, f, sort_keys=True)
                os.replace(tmp, STATE)
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)
            self.lock.close()

    def apply_reboots(self):
        until = self.s.setdefault("reboot_until", {})
        now = time.time()
        for k in [k for k, t in until.items() if now >= t]:
            del until[k]
            self.s["outlets"][k] = True
            self.dirty = True

    # --- outlets
    def outlet_on(self, n):
        return bool(self.s["outlets"].get(str(n), False))

    def outlet_name(self, n):
        return self.s.setdefault("outlet_names", {}).get(str(n), f"Outlet {n}")

    def set_outlet_name(self, n, v):
        self.s.setdefault("outlet_names", {})[str(n)] = v
        self.dirty = True

    def outlet_pending(self, n):
        return str(n) in self.s.get("reboot_until", {})

    def switch_outlet(self, n, action):
        """action: "on", "off" or "reboot"."""
        if n in self.s.get("stuck_outlets", []):
            log_switch(n, action + "-ignored")
            return
        log_switch(n, action)
        k = str(n)
        self.s["reboot_until"].pop(k, None)
        if action == "reboot":
            self.s["outlets"][k] = False
            self.s["reboot_until"][k] = time.time() + float(self.s.get("reboot_secs", 0))
        else:
            self.s["outlets"][k] = action == "on"
        self.dirty = True
        self.apply_reboots()

    # --- ports
    def port_up(self, n):
        return bool(self.s["ports"].get(str(n), False))

    def set_port(self, n, up):
        if n in self.s.get("stuck_ports", []):
            return
        self.s["ports"][str(n)] = up
        self.dirty = True

    def alias(self, n):
        return self.s.setdefault("aliases", {}).get(str(n), f"host{n}-hba")

    def set_alias(self, n, v):
        self.s.setdefault("aliases", {})[str(n)] = v
        self.dirty = True


def count(key):
    with Locked() as st:
        return len(st.s[key])


# A column entry: (asn type, getter(state) -> value, setter(state, value) -> error or None).
# Setters receive the value already checked against the column's type.
def table():
    t = {}
    if MODE == "pdu":
        n = count("outlets")
        for i in range(1, n + 1):
            pdu_rows(t, i)
    elif MODE == "ifmib":
        n = count("ports")
        t[IF_NUMBER] = ("integer", lambda st: len(st.s["ports"]), None)
        for i in range(1, n + 1):
            if_rows(t, i)
    elif MODE == "ifx":
        n = count("ports")
        for i in range(1, n + 1):
            t[IFX_ENTRY + (1, i)] = ("string", lambda st, i=i: f"port{i}", None)
            t[IFX_ENTRY + (18, i)] = (
                "string",
                lambda st, i=i: st.alias(i),
                lambda st, v, i=i: st.set_alias(i, v),
            )
    return t


def pdu_rows(t, i):
    def name(st, i=i):
        return st.outlet_name(i)

    def set_name(st, v, i=i):
        st.set_outlet_name(i, v)

    def command(mapping):
        def setter(st, v, i=i):
            action = mapping.get(v)
            if action is None:
                return "wrong-value"
            st.switch_outlet(i, action)
            return None

        return setter

    if MODEL == "apc-masterswitch":
        # sPDUOutletCtl: 1 outletOn, 2 outletOff, 3 outletReboot, 4 outletUnknown (read
        # only), 5/6/7 the same "with delay" (no delay here).
        ctl = {1: "on", 2: "off", 3: "reboot", 5: "on", 6: "off", 7: "reboot"}
        t[APC_MS + (1, i)] = ("integer", lambda st, i=i: i, None)
        t[APC_MS + (2, i)] = ("integer", lambda st, i=i: 1 if st.outlet_pending(i) else 2, None)
        t[APC_MS + (3, i)] = ("integer", lambda st, i=i: 1 if st.outlet_on(i) else 2, command(ctl))
        t[APC_MS + (4, i)] = ("string", name, set_name)
    elif MODEL == "apc-rpdu":
        # rPDUOutletControlOutletCommand: immediateOn 1, immediateOff 2, immediateReboot 3,
        # delayedOn 4, delayedOff 5, delayedReboot 6 (no delay here).
        ctl = {1: "on", 2: "off", 3: "reboot", 4: "on", 5: "off", 6: "reboot"}
        state = lambda st, i=i: 1 if st.outlet_on(i) else 2
        t[APC_RPDU_CTL + (1, i)] = ("integer", lambda st, i=i: i, None)
        t[APC_RPDU_CTL + (2, i)] = ("string", name, set_name)
        t[APC_RPDU_CTL + (4, i)] = ("integer", state, command(ctl))
        t[APC_RPDU_STATUS + (1, i)] = ("integer", lambda st, i=i: i, None)
        t[APC_RPDU_STATUS + (2, i)] = ("string", name, None)
        t[APC_RPDU_STATUS + (4, i)] = ("integer", state, None)
    elif MODEL == "raritan-px":
        # outletSwitchingState is a SensorStateEnumeration: on(7), off(8); switchingOperation
        # is off(0), on(1), cycle(2) and reads back the current state as 0 or 1.
        idx = (RARITAN_PDU_ID, i)
        t[RARITAN_CONFIG + (2,) + idx] = ("string", lambda st, i=i: str(i), None)
        t[RARITAN_CONFIG + (3,) + idx] = ("string", name, set_name)
        t[RARITAN_SWITCH + (2,) + idx] = (
            "integer",
            lambda st, i=i: 1 if st.outlet_on(i) else 0,
            command({0: "off", 1: "on", 2: "reboot"}),
        )
        t[RARITAN_SWITCH + (3,) + idx] = (
            "integer",
            lambda st, i=i: 7 if st.outlet_on(i) else 8,
            None,
        )
    elif MODEL == "eaton-epdu":
        # outletControlStatus: off(0), on(1), pendingOff(2), pendingOn(3). The command columns
        # take a delay in seconds (0 = now, -1 = cancel) and read -1 when nothing is pending.
        idx = (EATON_STRAPPING, i)

        def delayed(action, i=i):
            def setter(st, v):
                if v < -1 or v > 99999:
                    return "wrong-value"
                if v >= 0:
                    st.switch_outlet(i, action)
                return None

            return setter

        t[EATON_CONFIG + (2,) + idx] = ("string", lambda st, i=i: f"A{i}", None)
        t[EATON_CONFIG + (3,) + idx] = ("string", name, set_name)
        t[EATON_CONTROL + (2,) + idx] = (
            "integer",
            lambda st, i=i: 1 if st.outlet_on(i) else 0,
            None,
        )
        t[EATON_CONTROL + (3,) + idx] = ("integer", lambda st: -1, delayed("off"))
        t[EATON_CONTROL + (4,) + idx] = ("integer", lambda st: -1, delayed("on"))
        t[EATON_CONTROL + (5,) + idx] = ("integer", lambda st: -1, delayed("reboot"))
    else:
        raise SystemExit(f"unknown PDU model {MODEL!r}")


def if_rows(t, i):
    def admin(st, v, i=i):
        # Only up(1) and down(2): testing(3) is refused, as most switches do.
        if v not in (1, 2):
            return "wrong-value"
        st.set_port(i, v == 1)
        return None

    up = lambda st, i=i: 1 if st.port_up(i) else 2
    t[IF_ENTRY + (1, i)] = ("integer", lambda st, i=i: i, None)
    t[IF_ENTRY + (2, i)] = ("string", lambda st, i=i: f"port{i}", None)
    t[IF_ENTRY + (3, i)] = ("integer", lambda st: 6, None)  # ethernetCsmacd
    t[IF_ENTRY + (4, i)] = ("integer", lambda st: 1500, None)
    t[IF_ENTRY + (5, i)] = ("gauge", lambda st: 1000000000, None)
    t[IF_ENTRY + (7, i)] = ("integer", up, admin)
    # ifOperStatus follows ifAdminStatus: the link partner is always there.
    t[IF_ENTRY + (8, i)] = ("integer", up, None)


def oid_t(s):
    return tuple(int(x) for x in s.strip().strip(".").split(".") if x)


def oid_s(t):
    return "." + ".".join(map(str, t))


def fmt(st, o):
    typ, get, _ = TABLE[o]
    return f"{oid_s(o)}\n{typ}\n{get(st)}\n"


def parse_value(ttyp, typ, raw):
    """The value of a SET as the column's type, or an error word."""
    typ = typ.lower()
    if ttyp == "integer":
        if typ not in ("integer", "int"):
            return None, "wrong-type"
        try:
            return int(raw), None
        except ValueError:
            return None, "wrong-value"
    if ttyp == "string":
        if typ not in ("string", "octet"):
            return None, "wrong-type"
        if typ == "octet":
            try:
                return bytes.fromhex(raw.replace(" ", "")).decode("utf-8", "replace"), None
            except ValueError:
                return None, "wrong-value"
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        return raw, None
    return None, "not-writable"


def log_switch(n, action):
    with open(STATE + ".switches", "a") as f:
        f.write(f"{time.time():.6f} outlet={n} {action}\n")


def log_set(oid, typ, raw, result):
    with open(STATE + ".sets", "a") as f:
        f.write(f"{oid_s(oid)} {typ} {raw} {result}\n")


# Reads answered since this backend took its first SET; None before it.
GETS_AFTER_SET = None
# The longest a silenced backend sleeps, should the harness not kill it.
SILENCE_SECS = 600


def silence_if_due():
    """Hangs when the configured number of reads after a SET has been answered."""
    global GETS_AFTER_SET
    if GETS_AFTER_SET is None:
        return
    with Locked() as st:
        limit = st.s.get("silent_after_set_gets")
    if limit is None:
        return
    if GETS_AFTER_SET >= limit:
        # Silent until snmpd is gone (this process is re-parented) or the bound passes.
        parent = os.getppid()
        until = time.time() + SILENCE_SECS
        while os.getppid() == parent and time.time() < until:
            time.sleep(0.05)
        sys.exit(0)
    GETS_AFTER_SET += 1


def handle(cmd, rd):
    global GETS_AFTER_SET
    if cmd in ("get", "getnext"):
        silence_if_due()
    if cmd == "get":
        o = oid_t(rd())
        if o not in TABLE:
            return "NONE\n"
        with Locked() as st:
            return fmt(st, o)
    if cmd == "getnext":
        o = oid_t(rd())
        for k in KEYS:  # at most a few hundred rows: a scan is fine
            if k > o:
                with Locked() as st:
                    return fmt(st, k)
        return "NONE\n"
    if cmd == "set":
        o = oid_t(rd())
        typ, _, raw = rd().strip().partition(" ")
        raw = raw.strip()
        if o not in TABLE:
            # A column we serve but a row we do not have cannot be created; anything else in
            # the subtree does not exist for writing.
            column = o[:-1] if MODEL not in ("raritan-px", "eaton-epdu") else o[:-2]
            known = any(k[: len(column)] == column for k in KEYS)
            result = "no-creation" if known else "not-writable"
        else:
            ttyp, _, setter = TABLE[o]
            if setter is None:
                result = "not-writable"
            else:
                value, result = parse_value(ttyp, typ, raw)
                if result is None:
                    with Locked() as st:
                        result = setter(st, value) or "DONE"
        log_set(o, typ, raw, result)
        if GETS_AFTER_SET is None:
            GETS_AFTER_SET = 0
        return result + "\n"
    return "NONE\n"


TABLE = table()
KEYS = sorted(TABLE)


def main():
    rd = sys.stdin.readline
    while True:
        line = rd()
        if not line:
            return  # snmpd closed the pipe: it is exiting, so are we
        cmd = line.strip()
        if cmd == "":
            continue
        out = "PONG\n" if cmd == "PING" else handle(cmd, rd)
        sys.stdout.write(out)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
