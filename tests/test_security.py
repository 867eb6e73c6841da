"""CurveZMQ on the adapter and operator sockets, over real sockets: a known key gets through, an
unknown key or a plain client gets nothing, a revoked key stops working, the feed stays public."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import msgspec
import pytest
import zmq
import zmq.auth

from detectors import Clock, encode
from engine import protocol as P
from engine.client import OperatorClient, OperatorError
from engine.config import EngineConfig, SecurityParams
from engine.core import Engine
from engine.security import KeysError, list_keys, new_key, revoke_key, secure_client
from tests.serving import ANY, serving

NS = 10**9
T0 = 1_767_225_600 * NS
SILENCE_MS = 1000  # how long a refused client waits to see that nothing comes back


@pytest.fixture(scope="module")
def net(resco_dir):
    from network import compile_network

    return compile_network(resco_dir / "cologne1" / "cologne1.net.xml")


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    new_key(d, "ann", "operator")
    new_key(d, "bob", "operator")
    new_key(d, "box1", "adapter")
    # a key pair the engine never heard of, with the engine's public key (a stolen engine.key)
    zmq.auth.create_certificates(tmp_path, "mallory")
    (d / "private" / "mallory.key_secret").write_bytes((tmp_path / "mallory.key_secret").read_bytes())
    return d


@pytest.fixture
def secured(net, keys):
    cfg = EngineConfig(clock="sim", endpoints=ANY, security=SecurityParams(keys_dir=str(keys), reload_s=0.05))
    with serving(Engine(net, cfg)) as server:
        yield server


def _dealer(endpoint, keys_dir=None, name=None):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 2000)  # (a refused handshake may leave no pipe to queue on)
    if keys_dir is not None:
        secure_client(sock, keys_dir, name)
    sock.connect(endpoint)
    return sock


def test_keys_layout_and_refusals(tmp_path):
    d = tmp_path / "k"
    info = new_key(d, "ops-1", "operator")
    assert (d / "server" / "engine.key").exists() and (d / "server" / "engine.key_secret").exists()
    assert (d / "operators" / "ops-1.key").exists() and (d / "private" / "ops-1.key_secret").exists()
    pub, sec = zmq.auth.load_certificate(d / "private" / "ops-1.key_secret")
    assert sec is not None and pub.decode() == info["public_key"]
    assert zmq.auth.load_certificate(d / "operators" / "ops-1.key") == (pub, None)  # no secret on the allow-list
    with pytest.raises(KeysError, match="exists already"):
        new_key(d, "ops-1", "adapter")
    with pytest.raises(KeysError, match="bad key name"):
        new_key(d, "../evil", "operator")
    with pytest.raises(KeysError, match="role"):
        new_key(d, "x", "admin")
    revoke_key(d, "ops-1")
    assert [(k["name"], k["role"]) for k in list_keys(d)] == [("ops-1", "revoked")]
    with pytest.raises(KeysError, match="no key named"):
        revoke_key(d, "ops-1")
    with pytest.raises(KeysError, match="no key pair"):
        secure_client(zmq.Context.instance().socket(zmq.DEALER), d, "nobody")


def test_known_operator_key_works_and_is_who_in_the_audit(secured, keys):
    ep = secured.endpoints["operators"]
    with OperatorClient(ep, timeout_s=10, keys_dir=str(keys), name="ann") as ann:
        st = ann.request("status")
        assert st["security"]["enabled"] and st["security"]["allowed"] == {"operators": 2, "adapters": 1}
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(secured.endpoints["ingest"])
        push.send(encode(Clock(T0 + NS)))
        for _ in range(100):
            if ann.request("status")["tick"]["count"]:
                break
            time.sleep(0.02)
        push.close(0)
        j = secured.engine.net.tls_ids[0]
        # the key decides who asked, whatever name the request claims
        ann.request("override", junction=j, mode="hold", phase=1, **{"as": "the-mayor"})
        entry = ann.request("audit")["entries"][-1]
        assert entry["who"] == "ann" and entry["verified"] is True


def test_unknown_key_and_plain_client_get_nothing(secured, keys):
    """Neither a key off the allow-list nor a client without CurveZMQ gets an answer, on either
    socket; nothing they sent reaches the engine (no adapter registered, no request recorded)."""
    net = secured.engine.net
    hello = P.encoder.encode(P.Hello(junction=net.tls_ids[0], n_links=net.tls_n_links(0)))
    status = P.encoder.encode(P.Request(op="status"))
    clients = [
        ("adapters", _dealer(secured.endpoints["adapters"], keys, "mallory"), hello),
        ("adapters", _dealer(secured.endpoints["adapters"]), hello),
        ("adapters", _dealer(secured.endpoints["adapters"], keys, "ann"), hello),  # an operator key: wrong socket
        ("operators", _dealer(secured.endpoints["operators"], keys, "mallory"), status),
        ("operators", _dealer(secured.endpoints["operators"]), status),
        ("operators", _dealer(secured.endpoints["operators"], keys, "box1"), status),  # an adapter key
    ]
    try:
        poller = zmq.Poller()
        for _, sock, msg in clients:
            try:
                sock.send(msg)
            except zmq.Again:
                pass  # refused before it could even queue the message: no more access than a reply
            poller.register(sock, zmq.POLLIN)
        assert poller.poll(SILENCE_MS) == [], "an unauthenticated client got an answer"
        assert secured.links == {} and secured.signal_adapter == {}
        # the adapter with its key is welcomed on the same engine
        good = _dealer(secured.endpoints["adapters"], keys, "box1")
        try:
            good.send(hello)
            assert good.poll(5000)
            assert P.engine_to_adapter_decoder.decode(good.recv()).accepted
        finally:
            good.close(0)
        with OperatorClient(secured.endpoints["operators"], timeout_s=1, keys_dir=str(keys), name="mallory") as m:
            with pytest.raises(OperatorError, match="no reply"):
                m.request("status")
    finally:
        for _, sock, _ in clients:
            sock.close(0)


def test_revoked_key_stops_working_even_on_an_open_connection(secured, keys):
    ep = secured.endpoints["operators"]
    with OperatorClient(ep, timeout_s=10, keys_dir=str(keys), name="bob") as bob:
        assert bob.request("status")["security"]["allowed"]["operators"] == 2
        revoke_key(keys, "bob")
        time.sleep(0.3)  # the engine rereads the allow-lists every 0.05 s here
        bob.timeout_ms = SILENCE_MS
        with pytest.raises(OperatorError, match="no reply"):
            bob.request("status")
    with OperatorClient(ep, timeout_s=1, keys_dir=str(keys), name="bob") as again:
        with pytest.raises(OperatorError, match="no reply"):
            again.request("status")
    with OperatorClient(ep, timeout_s=10, keys_dir=str(keys), name="ann") as ann:
        st = ann.request("status")["security"]
        assert st["allowed"]["operators"] == 1 and st["dropped"] >= 1


def test_revoked_adapter_gets_no_more_commands(secured, keys):
    """An adapter welcomed with its key gets a command every tick; once its key is revoked its
    signal is unregistered: no more commands, and its hello is not answered."""
    net = secured.engine.net
    box = _dealer(secured.endpoints["adapters"], keys, "box1")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(secured.endpoints["ingest"])
    hello = P.encoder.encode(P.Hello(junction=net.tls_ids[0], n_links=net.tls_n_links(0)))
    try:
        box.send(hello)
        assert box.poll(5000) and P.engine_to_adapter_decoder.decode(box.recv()).accepted
        push.send(encode(Clock(T0 + NS)))
        assert box.poll(5000) and isinstance(P.engine_to_adapter_decoder.decode(box.recv()), P.Command)
        revoke_key(keys, "box1")
        for _ in range(200):
            if not secured.signal_adapter:
                break
            time.sleep(0.02)
        assert secured.signal_adapter == {}
        while box.poll(100):  # (a command of a tick before the reload)
            box.recv()
        for s in range(2, 5):
            push.send(encode(Clock(T0 + s * NS)))
        box.send(hello)
        assert not box.poll(SILENCE_MS)
        assert secured.engine.ticks >= 2
    finally:
        box.close(0)
        push.close(0)


def test_feed_stays_public(secured):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(secured.endpoints["feed"])
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(secured.endpoints["ingest"])
    try:
        time.sleep(0.2)  # the subscription reaches the publisher
        topics = set()
        for s in range(1, 30):
            push.send(encode(Clock(T0 + s * NS)))
            if sub.poll(200):
                topics.add(sub.recv_multipart()[0])
            if b"conditions" in topics:
                break
        assert b"conditions" in topics
    finally:
        sub.close(0)
        push.close(0)


def test_cli_keys_serve_and_ctl(net, tmp_path, resco_dir, capsys):
    """`keys new`, `serve --keys` (ready line as before), `ctl --keys --as`, and a plain `ctl` refused."""
    from engine.cli import build_parser

    assert "--keys" in build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    from engine.cli import main

    d = tmp_path / "keys"
    assert main(["keys", "new", "ann", "--dir", str(d), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "ann"
    assert main(["keys", "new", "ann", "--dir", str(d)]) == 2
    assert "exists already" in capsys.readouterr().err
    cfg = tmp_path / "engine.toml"
    cfg.write_text('tick_s = 0.2\n[endpoints]\ningest = "tcp://127.0.0.1:*"\nadapters = "tcp://127.0.0.1:*"\n'
                   'feed = "tcp://127.0.0.1:*"\noperators = "tcp://127.0.0.1:*"\n')
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", str(resco_dir / "cologne1" / "cologne1.net.xml"),
                             "--config", str(cfg), "--keys", str(d)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        ep = ready["endpoints"]["operators"]
        assert main(["ctl", "status", "--json", "--endpoint", ep, "--keys", str(d), "--as", "ann",
                     "--timeout", "20"]) == 0
        assert json.loads(capsys.readouterr().out)["security"]["enabled"]
        assert main(["ctl", "status", "--endpoint", ep, "--timeout", "1"]) == 1
        assert "no reply" in capsys.readouterr().err
        assert main(["ctl", "status", "--endpoint", ep, "--keys", str(d)]) == 2  # which key?
    finally:
        proc.terminate()
        proc.wait(10)


def test_keys_off_by_default(net):
    """Without keys (the default) a plain client is served as before."""
    cfg = EngineConfig(clock="sim", endpoints=ANY)
    assert cfg.security.keys_dir is None
    with serving(Engine(net, cfg)) as server:
        with OperatorClient(server.endpoints["operators"]) as c:
            assert c.request("status")["security"] == {"enabled": False}
    assert msgspec.json.decode(msgspec.json.encode(cfg), type=EngineConfig) == cfg
