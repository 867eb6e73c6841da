"""Detector data: wire messages, validation, and binning per lane per tick.

``messages`` defines what devices send on the ingest socket; ``DetectorBank`` checks each
reading against the inventory (``network.layout``) and bins accepted ones into
``LaneObservations`` for the tick. Bad input is counted by reason, never raised.
"""

from engine import kernel_cache

kernel_cache.check()  # before any kernel loads a cache compiled against older sources


from detectors.bank import DetectorBank, IngestLimits, LaneObservations
from detectors.messages import Batch, CameraReading, Clock, LoopReading, decode, encode

__all__ = [
    "Batch", "CameraReading", "Clock", "DetectorBank", "IngestLimits", "LaneObservations",
    "LoopReading", "decode", "encode",
]
