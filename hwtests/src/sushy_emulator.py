"""sushy-tools' Redfish emulator (fake driver, no libvirt), as the fencing tests run it.

Two additions to the upstream emulator, both configured through environment variables:

WK_POWER_DELAY_S
    Seconds before a ComputerSystem.Reset becomes visible in PowerState. Upstream waits a
    random 1..11 s; tests need a fixed delay (0 for speed, or a very long one for a BMC that
    accepts a reset and never carries it out).
WK_SESSIONS_LOG
    Adds Redfish session authentication, which sushy-tools 2.2 lacks: POST
    /redfish/v1/SessionService/Sessions with UserName/Password (checked against the same
    htpasswd file as basic auth) answers 201 with X-Auth-Token and Location; requests carrying
    a live token are let through; DELETE on the Location ends the session. Every create and
    delete is appended to the file named here, so a test can check that a client logged out.
WK_POWER_DIR
    Keeps each system's power in a file of this directory instead of sushy's own store, as
    ipmi_sim's chassis hook does, so that the test rig can wire it to a host: `<uuid>` holds
    1 (on) or 0 (off) and is switched at once (no delay); while `<uuid>.ignore-off` exists,
    an off is acknowledged and ignored (a lying BMC); every switch is appended to `<uuid>.log`
    as `<unix time> power=0|1|0-ignored`.
WK_SILENT_AFTER_RESET_GETS
    Once a ComputerSystem.Reset was accepted, this many more GETs are answered, then no
    request is answered any more (a BMC that dies in the middle of a fence): each is held
    until the emulator is stopped.
"""
import base64
import json
import os
import secrets
import sys
import time

from sushy_tools.emulator import auth_basic
from sushy_tools.emulator import main as emu_main
from sushy_tools.emulator.resources.systems import fakedriver

delay = os.environ.get("WK_POWER_DELAY_S")
if delay is not None:
    class _FixedDelay:
        @staticmethod
        def randint(a, b):
            return int(delay)
    fakedriver.random = _FixedDelay()

power_dir = os.environ.get("WK_POWER_DIR")
if power_dir is not None:
    from sushy_tools import error as sushy_error

    def _power_path(identity):
        return os.path.join(power_dir, identity)

    def _switch(identity, value):
        path = _power_path(identity)
        if value == "0" and os.path.exists(path + ".ignore-off"):
            value = "0-ignored"
        else:
            with open(path + ".tmp", "w") as f:
                f.write(value + "\n")
            os.replace(path + ".tmp", path)
        with open(path + ".log", "a") as f:
            f.write(f"{time.time():.6f} power={value}\n")

    def _get_power_state(self, identity):
        uuid = self._get(identity)["uuid"]
        try:
            with open(_power_path(uuid)) as f:
                return "Off" if f.read().strip() == "0" else "On"
        except OSError:
            return "On"

    def _set_power_state(self, identity, state):
        uuid = self._get(identity)["uuid"]
        if "On" in state:
            _switch(uuid, "1")
        elif state in ("ForceOff", "GracefulShutdown"):
            _switch(uuid, "0")
        elif "Restart" in state:
            _switch(uuid, "0")
            _switch(uuid, "1")
        else:
            raise sushy_error.NotSupportedError(f"Power state {state} is not supported")

    fakedriver.FakeDriver.get_power_state = _get_power_state
    fakedriver.FakeDriver.set_power_state = _set_power_state

SESSIONS = "/redfish/v1/SessionService/Sessions"


class Sessions:
    """WSGI middleware in front of sushy's own (basic auth) middleware."""

    def __init__(self, app, auth_file, log_path):
        self.app = app
        self.auth_file = auth_file
        self.log_path = log_path
        self.tokens = {}  # token -> (session id, user, password)
        self.next_id = 1

    def log(self, line):
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def reply(self, start_response, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        hdrs = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(status, hdrs + list(headers))
        return [data]

    def __call__(self, env, start_response):
        path = env.get("PATH_INFO", "").rstrip("/")
        method = env.get("REQUEST_METHOD", "GET")
        if path == SESSIONS and method == "POST":
            try:
                size = int(env.get("CONTENT_LENGTH") or 0)
                body = json.loads(env["wsgi.input"].read(size) or b"{}")
                user, password = body["UserName"], body["Password"]
                auth_basic.authenticate(self.auth_file, user, password.encode())
            except Exception:
                return self.reply(start_response, "401 Unauthorized",
                                  {"error": {"message": "invalid credentials"}})
            token = secrets.token_hex(16)
            sid = str(self.next_id)
            self.next_id += 1
            self.tokens[token] = (sid, user, password)
            self.log("create " + sid)
            return self.reply(start_response, "201 Created",
                              {"Id": sid, "UserName": user},
                              [("X-Auth-Token", token), ("Location", SESSIONS + "/" + sid)])
        token = env.get("HTTP_X_AUTH_TOKEN")
        if token is not None:
            session = self.tokens.get(token)
            if session is None:
                return self.reply(start_response, "401 Unauthorized",
                                  {"error": {"message": "invalid session token"}})
            sid, user, password = session
            if path == SESSIONS + "/" + sid and method == "DELETE":
                del self.tokens[token]
                self.log("delete " + sid)
                return self.reply(start_response, "204 No Content")
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            env["HTTP_AUTHORIZATION"] = "Basic " + basic
        if path == "/redfish/v1" and method == "GET":
            return self.root(env, start_response)
        return self.app(env, start_response)

    def root(self, env, start_response):
        """The service root, with the session service added as Redfish clients find it."""
        captured = {}

        def keep(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(env, keep))
        doc = json.loads(body)
        doc["SessionService"] = {"@odata.id": "/redfish/v1/SessionService"}
        doc.setdefault("Links", {})["Sessions"] = {"@odata.id": SESSIONS}
        return self.reply(start_response, captured["status"], doc)


class SilentAfterReset:
    """WSGI middleware: answers WK_SILENT_AFTER_RESET_GETS GETs after the first reset, then
    holds every request (bounded by SILENCE_SECS; the harness stops the emulator long before)."""

    SILENCE_SECS = 600

    def __init__(self, app, gets):
        self.app = app
        self.gets = gets
        self.answered = None  # GETs answered since the first reset; None before it

    def __call__(self, env, start_response):
        if self.answered is not None and self.answered >= self.gets:
            time.sleep(self.SILENCE_SECS)
        path = env.get("PATH_INFO", "")
        method = env.get("REQUEST_METHOD", "GET")
        if method == "POST" and path.endswith("/Actions/ComputerSystem.Reset"):
            if self.answered is None:
                self.answered = 0
        elif method == "GET" and self.answered is not None:
            self.answered += 1
        return self.app(env, start_response)


_configure = emu_main.app.configure


def configure(*args, **kwargs):
    _configure(*args, **kwargs)
    log_path = os.environ.get("WK_SESSIONS_LOG")
    auth_file = emu_main.app.config.get("SUSHY_EMULATOR_AUTH_FILE")
    if log_path and auth_file and not isinstance(emu_main.app.wsgi_app, Sessions):
        emu_main.app.wsgi_app = Sessions(emu_main.app.wsgi_app, auth_file, log_path)
    silent = os.environ.get("WK_SILENT_AFTER_RESET_GETS")
    if silent is not None and not isinstance(emu_main.app.wsgi_app, SilentAfterReset):
        emu_main.app.wsgi_app = SilentAfterReset(emu_main.app.wsgi_app, int(silent))


emu_main.app.configure = configure

if __name__ == "__main__":
    sys.exit(emu_main.main())
