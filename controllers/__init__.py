"""Signal timing: controllers behind one ``decide`` protocol, and the safety stage after them.

Each controller is a numba kernel over the compiled network's arrays with a thin class around
it (``controllers.base.Controller``). ``controllers.safety.Safety`` turns the phase each
controller wants into link states that respect minimum green, yellow, red clearance and
conflicts, whatever the controller asked.
"""

from engine import kernel_cache

kernel_cache.check()  # before any kernel loads a cache compiled against older sources


from controllers.adaptive import Adaptive, AdaptiveConfig
from controllers.actuated import Actuated, ActuatedConfig
from controllers.base import Controller
from controllers.fixed_time import FixedTime, FixedTimeConfig
from controllers.max_pressure import MaxPressure, MaxPressureConfig
from controllers.scats import Scats, ScatsConfig
from controllers.safety import GREEN, RED, YELLOW, Safety, SafetyConfig

CONTROLLERS = {c.name: c for c in (Adaptive, Actuated, Scats, MaxPressure, FixedTime)}

__all__ = [
    "CONTROLLERS", "Actuated", "ActuatedConfig", "Adaptive", "AdaptiveConfig", "Controller", "FixedTime",
    "FixedTimeConfig", "GREEN", "MaxPressure", "MaxPressureConfig", "RED", "Safety", "SafetyConfig", "Scats",
    "ScatsConfig", "YELLOW",
]
