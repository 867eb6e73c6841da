"""How good the engine's live estimates are: its published conditions against SUMO's edge data.

During an evaluation a :class:`FeedRecorder` subscribes to the engine's ``conditions`` feed, as
any public consumer would, and keeps the per-minute values the engine published. SUMO writes
its own ``edgeData`` (mean data) for every edge in 5-minute bins (:func:`write_edgedata`); it is
read only after the run, for measuring, and never reaches the engine. :func:`score` compares
the two, bin by bin:

- flow: vehicles leaving the edge in the bin (SUMO ``left + arrived``), as veh/h, against the
  mean of the engine's five minute flows of the bin. ``flow_mape_*`` over edge-bins with a true
  flow of at least ``MIN_FLOW_VPH``; ``flow_geh_lt5_share_unobserved``: share of edge-bins of
  uninstrumented edges with traffic on either side whose GEH (hourly flows) is below 5.
- ``speed_mape`` and ``travel_time_mape``: SUMO's space-mean ``speed`` and ``traveltime`` against
  the means of the engine's minute speeds and travel times, on edge-bins with a true flow of at
  least ``MIN_FLOW_VPH``.
- ``queue_mae_veh``: SUMO's ``waitingTime`` over the bin length (the mean number of halting
  vehicles on the edge) against the mean of the engine's minute queues, on every edge-bin some
  vehicle drove on.

"Observed" edges are the ones the detector inventory instruments (a counting loop on every
lane); the others are "unobserved" and estimated from the graph.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec
import numpy as np
import zmq

BIN_S = 300.0
MIN_FLOW_VPH = 60.0
MINUTE_S = 60.0


def write_edgedata(path: Path, output: Path, *, begin: float, period_s: float = BIN_S) -> Path:
    """An additional file asking SUMO for edge data of every edge in ``period_s`` bins."""
    root = ET.Element("additional")
    ET.SubElement(root, "edgeData", id="te-estimation-truth", file=str(Path(output).resolve()),
                  period=repr(float(period_s)), begin=repr(float(begin)), excludeEmpty="false")
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


class FeedRecorder:
    """A SUB on the engine's feed keeping each published minute of ``conditions``."""

    _decoder = msgspec.msgpack.Decoder()

    def __init__(self, endpoint: str, epoch_ns: int, context: zmq.Context | None = None):
        self.epoch_ns = epoch_ns
        self.sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"conditions")
        self.sock.connect(endpoint)
        self.edges: list[str] | None = None
        self.minutes: dict[float, dict] = {}  # minute end (simulated s) -> minute values
        self.messages = 0

    def poll(self, wait_ms: int = 0) -> None:
        """Take every message waiting (waiting up to ``wait_ms`` for the first)."""
        if wait_ms and not self.sock.poll(wait_ms):
            return
        while True:
            try:
                _, body = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = self._decoder.decode(body)
            self.messages += 1
            if self.edges is None:
                self.edges = list(msg["edges"])
            minute = msg.get("minute")
            if minute and minute["end_ns"] > 0:
                self.minutes[(minute["end_ns"] - self.epoch_ns) / 1e9] = minute

    def close(self) -> None:
        self.sock.close(0)


def read_edgedata(path: Path) -> list[tuple[float, float, dict[str, dict[str, float]]]]:
    """``[(begin, end, {edge: {attribute: value}})]`` from SUMO's edgeData output."""
    out = []
    for _, el in ET.iterparse(path):
        if el.tag == "interval":
            edges = {e.get("id"): {k: float(v) for k, v in e.attrib.items() if k != "id"} for e in el.iter("edge")}
            out.append((float(el.get("begin")), float(el.get("end")), edges))
            el.clear()
    return out


def true_flow_vph(attrs: dict[str, float], span_s: float) -> float:
    """An edge's flow in one bin of SUMO's edge data: the vehicles that left it or arrived on it, as veh/h."""
    return (attrs.get("left", 0.0) + attrs.get("arrived", 0.0)) * 3600.0 / span_s


def score(recorder: FeedRecorder, truth_path: Path, edge_ids: list[str], instrumented: np.ndarray) -> dict:
    """The ``estimation`` block of an evaluation (see the module docstring)."""
    if recorder.edges is not None and list(recorder.edges) != list(edge_ids):
        raise ValueError("the engine's feed lists other edges than the evaluated network")
    index = {e: k for k, e in enumerate(edge_ids)}
    rows = {"obs": [], "unobs": []}  # (true flow, est flow, true speed, est speed, true tt, est tt, true q, est q)
    bins_used = 0
    for b0, b1, data in read_edgedata(truth_path) if truth_path.is_file() else []:
        span = b1 - b0
        ends = [b0 + MINUTE_S * (k + 1) for k in range(int(round(span / MINUTE_S)))]
        if span <= 0 or not ends or any(t not in recorder.minutes for t in ends):
            continue  # a bin the engine did not publish whole (start, end, or feed loss)
        bins_used += 1
        flow = np.mean([recorder.minutes[t]["flow_vph"] for t in ends], axis=0)
        tt = np.mean([recorder.minutes[t]["travel_time_s"] for t in ends], axis=0)
        speed = np.mean([recorder.minutes[t]["speed_mps"] for t in ends], axis=0)
        queue = np.mean([recorder.minutes[t]["queue_veh"] for t in ends], axis=0)
        for edge, a in data.items():
            k = index.get(edge)
            if k is None:
                continue
            true_flow = true_flow_vph(a, span)
            sampled = a.get("sampledSeconds", 0.0)
            rows["obs" if instrumented[k] else "unobs"].append((
                true_flow, float(flow[k]), a.get("speed", math.nan) if sampled > 0 else math.nan,
                float(speed[k]), a.get("traveltime", math.nan) if sampled > 0 else math.nan,
                float(tt[k]), a.get("waitingTime", 0.0) / span, float(queue[k]), sampled,
            ))
    obs = np.array(rows["obs"], dtype=np.float64).reshape(-1, 9)
    unobs = np.array(rows["unobs"], dtype=np.float64).reshape(-1, 9)
    both = np.vstack([obs, unobs])

    def mape(a: np.ndarray, ct: int, ce: int) -> float | None:
        sel = a[(a[:, 0] >= MIN_FLOW_VPH) & np.isfinite(a[:, ct]) & (a[:, ct] > 0)]
        return _r(100.0 * np.mean(np.abs(sel[:, ce] - sel[:, ct]) / sel[:, ct])) if len(sel) else None

    def queue_mae(a: np.ndarray) -> float | None:
        sel = a[a[:, 8] > 0]
        return _r(np.mean(np.abs(sel[:, 7] - sel[:, 6]))) if len(sel) else None

    traffic = unobs[(unobs[:, 0] + unobs[:, 1]) > 0]
    geh = np.sqrt(2 * (traffic[:, 1] - traffic[:, 0]) ** 2 / (traffic[:, 1] + traffic[:, 0]))
    return {
        "bins": bins_used,
        "bin_s": BIN_S,
        "edges_observed": int(instrumented.sum()),
        "edges_unobserved": int((~instrumented).sum()),
        "flow_mape_observed": mape(obs, 0, 1),
        "flow_mape_unobserved": mape(unobs, 0, 1),
        "flow_geh_lt5_share_unobserved": _r(float(np.mean(geh < 5)), 4) if len(geh) else None,
        "speed_mape": mape(both, 2, 3),
        "travel_time_mape": mape(both, 4, 5),
        "queue_mae_veh": queue_mae(both),
        "speed_mape_observed": mape(obs, 2, 3),
        "speed_mape_unobserved": mape(unobs, 2, 3),
        "travel_time_mape_observed": mape(obs, 4, 5),
        "travel_time_mape_unobserved": mape(unobs, 4, 5),
        "queue_mae_veh_observed": queue_mae(obs),
        "queue_mae_veh_unobserved": queue_mae(unobs),
        "edge_bins_flow_observed": int((obs[:, 0] >= MIN_FLOW_VPH).sum()),
        "edge_bins_flow_unobserved": int((unobs[:, 0] >= MIN_FLOW_VPH).sum()),
        "feed_messages": recorder.messages,
    }


def _r(x: float, nd: int = 2) -> float:
    return round(float(x), nd)
