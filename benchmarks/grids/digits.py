E = {"train.eval_from": 1.0}
CANDIDATES = [
    {**E, "train.epochs": 10.0},
    {**E, "train.epochs": 6.0},
    {**E, "train.epochs": 4.0},
    {**E, "train.epochs": 6.0, "train.batch_size": 128, "optim.lr": 2e-2},
    {**E, "train.epochs": 6.0, "model.channels": (16,)},
]
