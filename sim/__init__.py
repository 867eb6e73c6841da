"""SUMO side: the simulated city that drives the engine through its sockets."""
