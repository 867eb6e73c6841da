"""The road network: read, compile, estimate.

``read_sumo_net`` turns a SUMO ``.net.xml`` into a networkx ``DiGraph`` whose nodes are
junctions and whose edges are roads; the graph carries lanes, movements (lane-to-lane
connections with the signal and link index that controls them), and for every signal its
conflicting link pairs and its phases. ``compile_network`` turns that graph into
struct-of-arrays (:class:`CompiledNetwork`) with integer indices, which every kernel reads.
"""

from engine import kernel_cache

kernel_cache.check()  # before any kernel loads a cache compiled against older sources


from network.compiled import CompiledNetwork, compile_network
from network.layout import DetectorSpec, default_layout
from network.sumo_net import read_sumo_net

__all__ = ["CompiledNetwork", "DetectorSpec", "compile_network", "default_layout", "read_sumo_net"]
