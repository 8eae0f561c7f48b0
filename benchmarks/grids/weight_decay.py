"""Does weight decay help the MNIST-1D recipes? None, decoupled (AdamW, norm/bias/1-d spared), and on every parameter
(validation only; run with --seeds 12 on mnist1d and on mnist1d_98)."""
CANDIDATES = [
    {"optim.weight_decay": 0.0},
    {"optim.weight_decay": 5e-4, "optim.no_decay_1d": True},
    {"optim.weight_decay": 5e-4, "optim.no_decay_1d": False},
    {"optim.weight_decay": 5e-3, "optim.no_decay_1d": True},
]
