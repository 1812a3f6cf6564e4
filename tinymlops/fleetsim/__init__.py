"""fleetsim."""
