"""`traffic-engine serve` as a user runs it: a live process on the wall clock, stopped by a signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from engine.client import OperatorClient


def test_serve_ticks_on_the_wall_clock_and_stops_cleanly(resco_dir, tmp_path):
    cfg = tmp_path / "engine.toml"
    cfg.write_text('tick_s = 0.2\n[endpoints]\ningest = "tcp://127.0.0.1:*"\nadapters = "tcp://127.0.0.1:*"\n'
                   'feed = "tcp://127.0.0.1:*"\noperators = "tcp://127.0.0.1:*"\n'
                   'snapshot = "tcp://127.0.0.1:*"\n')
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", str(resco_dir / "cologne1" / "cologne1.net.xml"),
                             "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["ready"] and set(ready["endpoints"]) == {"ingest", "adapters", "feed", "operators", "snapshot"}
        with OperatorClient(ready["endpoints"]["operators"], timeout_s=10) as client:
            first = client.request("status")["tick"]["count"]
            time.sleep(1.0)
            st = client.request("status")
        assert st["clock"] == "wall" and st["tick"]["period_s"] == 0.2
        assert st["tick"]["count"] > first  # it ticks by itself (no watermarks on the wall clock)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_bad_config_with_a_clear_message(resco_dir, tmp_path):
    cfg = tmp_path / "engine.json"
    cfg.write_text('{"tick_s": 1, "controler": "max-pressure"}')
    r = subprocess.run([sys.executable, "-m", "engine", "serve", str(resco_dir / "cologne1" / "cologne1.net.xml"),
                        "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "controler" in r.stderr
