"""CurveZMQ on the adapter and operator sockets: keys, allow-lists, and the client side.

With ``serve --keys DIR`` the engine's adapter (ROUTER 7702) and operator (ROUTER 7704)
sockets are CurveZMQ servers: every peer must hold a key pair whose public key is in the
allow-list for that socket, or its connection is dropped in the handshake and nothing it sends
reaches the engine. The feed (PUB 7703) stays public and read-only, the ingest socket unchanged.

Layout of DIR (``traffic-engine keys new NAME --dir DIR [--role operator|adapter]``)::

    DIR/server/engine.key            the engine's public key (clients need it)
    DIR/server/engine.key_secret     the engine's key pair (made on first use; stays on the engine)
    DIR/operators/NAME.key           allow-list of the operator socket (public keys)
    DIR/adapters/NAME.key            allow-list of the adapter socket (public keys)
    DIR/private/NAME.key_secret      NAME's key pair: give it (with server/engine.key) to NAME only
    DIR/revoked/NAME.key             keys taken off an allow-list by ``keys revoke``

A client's own directory needs ``server/engine.key`` and ``private/NAME.key_secret`` in the same
layout; the engine needs ``server/`` and the allow-lists, never ``private/``. Files are the
ZeroMQ certificate format of ``zmq.auth.create_certificates``.

**Revoking** a key: ``traffic-engine keys revoke NAME --dir DIR`` (or deleting
``DIR/<role>s/NAME.key``). The engine checks the allow-lists every ``security.reload_s``
(1 s): a revoked key can no longer connect, and every message that still arrives on a
connection made with it is dropped (each message carries its sender's public key, which is
checked against the allow-list of the moment); an adapter whose key is revoked gets no more
commands (its signals are unregistered). An added key works after the same delay.

**Who**: the name of an operator's key (its file name) is who it is in the audit trail.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("traffic_engine.security")

ROLES = ("operator", "adapter")
SERVER_NAME = "engine"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeysError(ValueError):
    """A key or key directory that cannot be used; the message says why."""


def role_dir(keys_dir: str | Path, role: str) -> Path:
    if role not in ROLES:
        raise KeysError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return Path(keys_dir) / f"{role}s"


def server_key(keys_dir: str | Path, create: bool = False) -> tuple[bytes, bytes | None]:
    """The engine's ``(public, secret)`` key; secret is None when only the public half is there
    (a client's directory). With ``create`` a missing pair is made."""
    d = Path(keys_dir) / "server"
    secret_file = d / f"{SERVER_NAME}.key_secret"
    public_file = d / f"{SERVER_NAME}.key"
    if create and not public_file.exists():
        d.mkdir(parents=True, exist_ok=True)
        zmq.auth.create_certificates(d, SERVER_NAME)
        os.chmod(secret_file, 0o600)
        log.info("made the engine's key pair in %s", d)
    if secret_file.exists():
        pub, sec = zmq.auth.load_certificate(secret_file)
        return pub, sec
    if public_file.exists():
        return zmq.auth.load_certificate(public_file)[0], None
    raise KeysError(f"no engine key in {d} (the engine makes it on first `serve --keys {keys_dir}`, "
                    f"`traffic-engine keys new` too; copy server/{SERVER_NAME}.key to the client)")


def new_key(keys_dir: str | Path, name: str, role: str = "operator") -> dict:
    """Make NAME's key pair: public key on ROLE's allow-list, pair under ``private/``."""
    if not _NAME.match(name or "") or name == SERVER_NAME:
        raise KeysError(f"bad key name {name!r}: letters, digits, '_', '.', '-' (up to 64), not {SERVER_NAME!r}")
    allow = role_dir(keys_dir, role)
    root = Path(keys_dir)
    for r in ROLES:
        if (role_dir(root, r) / f"{name}.key").exists():
            raise KeysError(f"a key named {name!r} exists already (role {r}); revoke it or pick another name")
    server_key(root, create=True)
    private = root / "private"
    for d in (allow, private):
        d.mkdir(parents=True, exist_ok=True)
    pub_file, secret_file = zmq.auth.create_certificates(private, name, metadata={"role": role})
    os.chmod(secret_file, 0o600)
    shutil.move(pub_file, allow / f"{name}.key")
    public, _ = zmq.auth.load_certificate(secret_file)
    return {"name": name, "role": role, "public_key": public.decode(), "allow_list": str(allow / f"{name}.key"),
            "key_pair": str(secret_file), "server_key": str(root / "server" / f"{SERVER_NAME}.key")}


def revoke_key(keys_dir: str | Path, name: str) -> dict:
    """Move NAME's public key off its allow-list into ``revoked/``."""
    root = Path(keys_dir)
    for role in ROLES:
        f = role_dir(root, role) / f"{name}.key"
        if f.exists():
            (root / "revoked").mkdir(exist_ok=True)
            dest = root / "revoked" / f"{name}.key"
            if dest.exists():
                dest = root / "revoked" / f"{name}.{time.time_ns()}.key"
            shutil.move(f, dest)
            return {"name": name, "role": role, "moved_to": str(dest)}
    raise KeysError(f"no key named {name!r} on an allow-list in {root}")


def list_keys(keys_dir: str | Path) -> list[dict]:
    root = Path(keys_dir)
    out = []
    for role in ROLES:
        for f in sorted(role_dir(root, role).glob("*.key")):
            out.append({"name": f.stem, "role": role, "public_key": zmq.auth.load_certificate(f)[0].decode()})
    for f in sorted((root / "revoked").glob("*.key")):
        out.append({"name": f.stem, "role": "revoked", "public_key": zmq.auth.load_certificate(f)[0].decode()})
    return out


def secure_client(sock: zmq.Socket, keys_dir: str | Path, name: str) -> zmq.Socket:
    """Make ``sock`` (a DEALER or REQ, before ``connect``) a CurveZMQ client with NAME's key pair
    from ``keys_dir/private/NAME.key_secret`` and the engine's public key from
    ``keys_dir/server/engine.key``. Usable as an adapter's ``socket_setup`` hook."""
    return curve_client(sock, client_keys(keys_dir, name))


def curve_client(sock: zmq.Socket, keys: tuple[bytes, bytes, bytes]) -> zmq.Socket:
    """Make ``sock`` a CurveZMQ client with ``keys`` as :func:`client_keys` loads them (for many
    sockets of one client: loaded once)."""
    public, secret, server_public = keys
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public
    return sock


def client_keys(keys_dir: str | Path, name: str) -> tuple[bytes, bytes, bytes]:
    """NAME's public and secret key and the engine's public key, from ``keys_dir`` (the layout
    above); a :class:`KeysError` that says what is missing."""
    root = Path(keys_dir)
    secret_file = root / "private" / f"{name}.key_secret"
    if not secret_file.exists():
        raise KeysError(f"no key pair for {name!r}: {secret_file} is missing "
                        f"(`traffic-engine keys new {name} --dir {keys_dir}` makes one)")
    public, secret = zmq.auth.load_certificate(secret_file)
    if secret is None:
        raise KeysError(f"{secret_file} holds no secret key")
    server_public, _ = server_key(root)
    return public, secret, server_public


class Security:
    """The engine side: a ZAP authenticator with one allow-list per socket, reloaded when the
    key directory changes, and the name behind each message's key."""

    DOMAINS = {"operators": "operator", "adapters": "adapter"}

    def __init__(self, context: zmq.Context, keys_dir: str | Path, reload_s: float = 1.0):
        self.dir = Path(keys_dir)
        self.public, self.secret = server_key(self.dir, create=True)
        if self.secret is None:
            raise KeysError(f"{self.dir / 'server'} has the engine's public key but not its secret")
        for role in ROLES:
            role_dir(self.dir, role).mkdir(parents=True, exist_ok=True)
        self.reload_s = reload_s
        self.auth = ThreadAuthenticator(context, log=logging.getLogger("traffic_engine.zap"))
        self.auth.start()
        self.names: dict[str, dict[bytes, str]] = {d: {} for d in self.DOMAINS}  # domain -> z85 key -> name
        self.dropped = 0  # messages from keys no longer allowed
        self.reloads = 0
        self._signature = None
        self._next_check = 0.0
        self.reload()

    def server_options(self, domain: str) -> dict[int, int | bytes]:
        """Socket options (set before bind) that make a socket a CurveZMQ server of ``domain``."""
        return {zmq.CURVE_SERVER: 1, zmq.CURVE_SECRETKEY: self.secret, zmq.CURVE_PUBLICKEY: self.public,
                zmq.ZAP_DOMAIN: domain.encode()}

    def _scan(self) -> tuple:
        sig = []
        for domain, role in self.DOMAINS.items():
            for f in sorted(role_dir(self.dir, role).glob("*.key")):
                try:
                    st = f.stat()
                except OSError:
                    continue
                sig.append((domain, f.name, st.st_mtime_ns, st.st_size))
        return tuple(sig)

    def reload(self) -> bool:
        """Read the allow-lists again if they changed; True if they did."""
        sig = self._scan()
        if sig == self._signature:
            return False
        names: dict[str, dict[bytes, str]] = {}
        for domain, role in self.DOMAINS.items():
            keys = {}
            for f in sorted(role_dir(self.dir, role).glob("*.key")):
                try:
                    keys[zmq.auth.load_certificate(f)[0]] = f.stem
                except (OSError, ValueError) as exc:
                    log.error("ignoring unreadable key %s: %s", f, exc)
            names[domain] = keys
            self.auth.certs[domain] = {k: True for k in keys}  # what configure_curve(domain, dir) loads
        self.auth.allow_any = False
        self.names = names
        self._signature = sig
        self.reloads += 1
        log.info("allow-lists loaded: %s", ", ".join(f"{d} {len(k)}" for d, k in names.items()))
        return True

    def maybe_reload(self) -> bool:
        """``reload`` at most every ``reload_s`` seconds (called from the server loop); True if
        the allow-lists changed."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.reload_s
            return self.reload()
        return False

    def who(self, domain: str, frame: zmq.Frame) -> str | None:
        """The key name of the sender of ``frame`` (received with ``copy=False``) if its key is on
        ``domain``'s allow-list now, else None (the message must be dropped)."""
        try:
            user = frame.get("User-Id")
        except zmq.ZMQError:
            user = None
        name = self.names[domain].get(user.encode()) if user else None
        if name is None:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:
                log.warning("dropped %d message(s) from keys not (or no longer) allowed on %s (last: %s)",
                            self.dropped, domain, user)
        return name

    def status(self) -> dict:
        return {"enabled": True, "dir": str(self.dir), "server_key": self.public.decode(),
                "allowed": {d: len(k) for d, k in self.names.items()}, "dropped": self.dropped,
                "reloads": self.reloads}

    def close(self) -> None:
        self.auth.stop()
