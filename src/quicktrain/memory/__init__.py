"""Fitting a training step into memory: gradient accumulation (accumulate.py), activation checkpointing per block
(checkpointing.py), reversible residual blocks (reversible.py), measuring what a step holds (tracking.py) and a
planner that chooses among them under a cap (planner.py). Each is a plain function or module first; the loop wires
them in through the `memory` config section and `system.memory`."""
