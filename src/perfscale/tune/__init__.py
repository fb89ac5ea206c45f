"""Search over configurations: the knob space (space.py) and its ranking (rank.py)."""
