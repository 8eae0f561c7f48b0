"""Is 3 epochs more than the 94% recipe needs? Shorter runs at the same or higher peak LR (validation only)."""
CANDIDATES = [
    {},
    {"train.epochs": 2.75},
    {"train.epochs": 2.75, "optim.lr": 5e-2},
    {"train.epochs": 2.5, "optim.lr": 5e-2},
]
