"""The decide layer: the knob space (space.py), its ranking (rank.py), the estimated plan search and
its advice in words (plan.py, advice.py), and the measured tunes (train.py, infer.py, infer_decoder.py).

`from perfscale.tune.plan import plan` is the Python API of `perfscale plan`.
"""
