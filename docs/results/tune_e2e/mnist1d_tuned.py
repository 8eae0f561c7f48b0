"""Tuned by `quicktrain tune` (study 'mnist1d-time', objective time, budget 600s), 2026-11-24.

Best (trial 148): value 0.13200953300110996; its parameters:
{
 "methods.label_smoothing": 0.0010395275725140253,
 "optim.lr": 0.030669021889167907,
 "optim.weight_decay": 0.0005043948470887039,
 "schedule.warmup": 0.5857339391163192,
 "train.batch_size": 192,
 "train.epochs": 2.6703749116483233
}
"""

import json

from quicktrain.config import from_dict

CONFIG = from_dict(json.loads('{\n  "checkpoint": {\n    "every_seconds": 30.0,\n    "every_steps": 0,\n    "keep": 2,\n    "on_signal": true\n  },\n  "data": {\n    "augment": "auto",\n    "mnist1d": {\n      "corr_noise_scale": 0.25,\n      "final_seq_length": 40,\n      "iid_noise_scale": 0.02,\n      "max_translation": 48,\n      "num_samples": 5000,\n      "padding": [\n        36,\n        60\n      ],\n      "scale_coeff": 0.4,\n      "seed": 42,\n      "shear_scale": 0.75,\n      "shuffle_seq": false,\n      "template_len": 12,\n      "train_split": 0.8\n    },\n    "name": "mnist1d",\n    "num_classes": 0,\n    "path": "",\n    "resident_max_mb": 2048.0,\n    "shift": 4,\n    "split_seed": 0,\n    "test_fraction": 0.2,\n    "val_fraction": 0.1\n  },\n  "methods": {\n    "ema": 0.0,\n    "ema_every": 1,\n    "label_smoothing": 0.0010395275725140253,\n    "resize_from": 1.0,\n    "resize_multiple": 4,\n    "resize_until": 0.5,\n    "tta": true\n  },\n  "model": {\n    "channels": [\n      32,\n      48,\n      64\n    ],\n    "name": "fastnet1d",\n    "strides": []\n  },\n  "name": "mnist1d_tuned",\n  "optim": {\n    "betas": [\n      0.9,\n      0.999\n    ],\n    "eps": 1e-08,\n    "grad_clip": 0.0,\n    "lr": 0.030669021889167907,\n    "lr_find": false,\n    "momentum": 0.9,\n    "name": "adamw",\n    "no_decay_1d": true,\n    "weight_decay": 0.0005043948470887039\n  },\n  "schedule": {\n    "batch_ramp_from": 0,\n    "batch_ramp_until": 0.5,\n    "end_frac": 0.0,\n    "kind": "onecycle",\n    "lr_batch_rule": "sqrt",\n    "start_frac": 0.04,\n    "warmup": 0.5857339391163192\n  },\n  "system": {\n    "channels_last": "auto",\n    "compile": "auto",\n    "device": "auto",\n    "precision": "auto",\n    "threads": 0\n  },\n  "train": {\n    "batch_size": 192,\n    "epochs": 2.6703749116483233,\n    "eval_every": 1.0,\n    "eval_from": 1.0,\n    "max_seconds": 0.0,\n    "seed": 0,\n    "sequential": false,\n    "stop_on_target": true,\n    "target": 0.94\n  }\n}'))
