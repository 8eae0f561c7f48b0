"""Candidates for the 94% recipe: batch size x epochs x LR x warmup x width, a single check at the end."""
E = {"train.eval_from": 1.0}
CANDIDATES = [
    {**E, "train.batch_size": 128, "train.epochs": 3.0, "optim.lr": 2e-2, "schedule.warmup": 0.5},
    {**E, "train.batch_size": 128, "train.epochs": 2.5, "optim.lr": 3e-2, "schedule.warmup": 0.5},
    {**E, "train.batch_size": 160, "train.epochs": 3.0, "optim.lr": 3e-2, "schedule.warmup": 0.5},
    {**E, "train.batch_size": 192, "train.epochs": 3.0, "optim.lr": 3e-2, "schedule.warmup": 0.5},
    {**E, "train.batch_size": 192, "train.epochs": 3.0, "optim.lr": 4e-2, "schedule.warmup": 0.5},
    {**E, "train.batch_size": 192, "train.epochs": 3.0, "optim.lr": 3e-2, "schedule.warmup": 0.3},
    {**E, "train.batch_size": 192, "train.epochs": 3.0, "optim.lr": 3e-2, "schedule.warmup": 0.5,
     "optim.betas": (0.9, 0.95)},
    {**E, "train.batch_size": 192, "train.epochs": 3.0, "optim.lr": 3e-2, "schedule.warmup": 0.5,
     "methods.label_smoothing": 0.1},
    {**E, "train.batch_size": 192, "train.epochs": 3.0, "optim.lr": 3e-2, "schedule.warmup": 0.5,
     "model.channels": (48, 64, 64)},
    {**E, "train.batch_size": 192, "train.epochs": 2.5, "optim.lr": 4e-2, "schedule.warmup": 0.5,
     "model.channels": (48, 64, 96)},
    {**E, "train.batch_size": 256, "train.epochs": 3.5, "optim.lr": 4e-2, "schedule.warmup": 0.5},
]
