E = {"train.eval_from": 1.0}
CANDIDATES = [
    {**E, "train.epochs": 4.0},
    {**E, "train.epochs": 3.0, "model.channels": (16, 32)},
    {**E, "train.epochs": 4.0, "model.channels": (16, 32)},
    {**E, "train.epochs": 4.0, "train.batch_size": 256, "optim.lr": 2e-2},
]
