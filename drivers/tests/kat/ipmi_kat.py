#!/usr/bin/env python3
"""Known-answer values for the IPMI RMCP+ driver, computed independently of it.

Only Python's hmac/hashlib and the openssl command line (for AES-CBC-128) are used, following
the IPMI v2.0 rev 1.1 text (sections 13.28-13.32), not the Rust code. The output is pasted into
drivers/tests/ipmi_kat.rs; run `python3 drivers/tests/kat/ipmi_kat.py` to regenerate and compare.

Scenario, the same for every suite: console session id SIDc, BMC session id SIDm, console random
Rc, BMC random Rm, BMC GUID, role 0x14 (administrator, name-only lookup), user "admin" with
password "secret", no BMC key (KG = password). Then the first request of the session (Get
Chassis Status, rqSeq 1, session sequence 1, IV below) and a BMC response (power on, BMC
sequence 7, its own IV).
"""
import hashlib
import hmac
import struct
import subprocess

SIDC = 0x0A0B0C0D
SIDM = 0x11223344
RC = bytes(range(0x00, 0x10))
RM = bytes(range(0x10, 0x20))
GUID = bytes(range(0xA0, 0xB0))
ROLE = 0x14
USER = b"admin"
PASSWORD = b"secret"
REQ_IV = bytes(range(0x30, 0x40))
RESP_IV = bytes(range(0x40, 0x50))
RMCP = bytes([0x06, 0x00, 0xFF, 0x07])

SUITES = {
    # id: (hash, full length, truncated length, auth alg, integrity alg, confidentiality alg)
    3: (hashlib.sha1, 20, 12, 0x01, 0x01, 0x01),
    17: (hashlib.sha256, 32, 16, 0x03, 0x04, 0x01),
}


def mac(h, key, data):
    return hmac.new(key, data, h).digest()


def le32(v):
    return struct.pack("<I", v)


def checksum(b):
    return (-sum(b)) & 0xFF


def aes_cbc(key, iv, data):
    out = subprocess.run(
        ["openssl", "enc", "-aes-128-cbc", "-nopad", "-K", key.hex(), "-iv", iv.hex()],
        input=data, capture_output=True, check=True,
    )
    return out.stdout


def conf_pad(data):
    # Pad bytes 01 02 03 ..., then the pad length, to a multiple of 16 (section 13.29).
    n = (16 - (len(data) + 1) % 16) % 16
    return data + bytes(range(1, n + 1)) + bytes([n])


def v20(ptype, sid, seq, payload, k1=None, h=None, trunc=0):
    body = bytes([0x06, ptype]) + le32(sid) + le32(seq) + struct.pack("<H", len(payload)) + payload
    if k1 is None:
        return RMCP + body
    pad = (4 - (len(body) + 2) % 4) % 4
    body += b"\xff" * pad + bytes([pad, 0x07])
    return RMCP + body + mac(h, k1, body)[:trunc]


def emit(name, value):
    print(f'const {name}: &str = "{value.hex()}";')


for suite, (h, full, trunc, a_alg, i_alg, c_alg) in SUITES.items():
    p = f"S{suite}_"
    ulen_user = bytes([ROLE, len(USER)]) + USER
    rakp2 = mac(h, PASSWORD, le32(SIDC) + le32(SIDM) + RC + RM + GUID + ulen_user)
    rakp3 = mac(h, PASSWORD, RM + le32(SIDC) + ulen_user)
    sik = mac(h, PASSWORD, RC + RM + ulen_user)
    # Const 1 and Const 2 are 20 bytes for every suite (section 13.32), also the SHA-256
    # ones: as ipmitool, FreeIPMI and OpenBMC's netipmid derive them.
    k1 = mac(h, sik, b"\x01" * 20)
    k2 = mac(h, sik, b"\x02" * 20)
    rakp4 = mac(h, sik, RC + le32(SIDM) + GUID)[:trunc]
    emit(p + "RAKP2_CODE", rakp2)
    emit(p + "RAKP3_CODE", rakp3)
    emit(p + "SIK", sik)
    emit(p + "K1", k1)
    emit(p + "K2", k2)
    emit(p + "RAKP4_ICV", rakp4)

    # Handshake datagrams, message tag 0.
    algs = b"".join(bytes([t, 0, 0, 8, a, 0, 0, 0]) for t, a in ((0, a_alg), (1, i_alg), (2, c_alg)))
    emit(p + "OPEN_REQUEST", v20(0x10, 0, 0, bytes([0, ROLE & 0x0F, 0, 0]) + le32(SIDC) + algs))
    emit(p + "OPEN_RESPONSE", v20(0x11, 0, 0, bytes([0, 0, 4, 0]) + le32(SIDC) + le32(SIDM) + algs))
    emit(p + "RAKP1", v20(0x12, 0, 0, bytes([0, 0, 0, 0]) + le32(SIDM) + RC + bytes([ROLE, 0, 0, len(USER)]) + USER))
    emit(p + "RAKP2", v20(0x13, 0, 0, bytes([0, 0, 0, 0]) + le32(SIDC) + RM + GUID + rakp2))
    emit(p + "RAKP3", v20(0x14, 0, 0, bytes([0, 0, 0, 0]) + le32(SIDM) + rakp3))
    emit(p + "RAKP4", v20(0x15, 0, 0, bytes([0, 0, 0, 0]) + le32(SIDC) + rakp4))

    # First request: Get Chassis Status (netFn 0, cmd 1), rqSeq 1, session sequence 1.
    hdr = bytes([0x20, 0x00 << 2])
    body = bytes([0x81, 1 << 2, 0x01])
    msg = hdr + bytes([checksum(hdr)]) + body + bytes([checksum(body)])
    enc = REQ_IV + aes_cbc(k2[:16], REQ_IV, conf_pad(msg))
    emit(p + "REQUEST", v20(0xC0, SIDM, 1, enc, k1, h, trunc))

    # BMC response: netFn 1, rqSeq 1, completion 0, power on, sequence 7, to SIDc.
    hdr = bytes([0x81, 0x01 << 2])
    body = bytes([0x20, 1 << 2, 0x01, 0x00, 0x01, 0x00, 0x00])
    msg = hdr + bytes([checksum(hdr)]) + body + bytes([checksum(body)])
    enc = RESP_IV + aes_cbc(k2[:16], RESP_IV, conf_pad(msg))
    emit(p + "RESPONSE", v20(0xC0, SIDC, 7, enc, k1, h, trunc))
