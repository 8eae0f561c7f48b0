"""The fast next-token default on the built-in corpus (the Python standard library's source, bytes): the speedrun's
techniques (modded-nanogpt) at a size this CPU trains quickly. Measured against `nanogpt` (nanoGPT's own CPU
configuration) in docs/BENCHMARKS.md, "Language model: stdlib_lm vs nanoGPT's CPU recipe".

Model: 4 layers, 4 heads, width 128 (nanoGPT's CPU size) with rotary embeddings, QK-norm, ReLU^2, an untied head
and zero-initialised output projections. Muon on the hidden 2-D weights, AdamW on embeddings, head and gains.
Sequence-length warm-up from a quarter of the context. Precision, layout and compile are `auto` (measured per
machine). The target is nanoGPT's loss L* on this corpus, so a run stops when it gets there.
"""

from quicktrain.config import (Config, DataConfig, GPTArgs, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig,
                               TrainConfig)

CONFIG = Config(
    name="stdlib_lm",
    tuned_for="",  # next-token constants are not adapted (quicktrain.adapt is for classification)
    data=DataConfig(name="stdlib", context=64, augment="none"),
    model=ModelConfig(name="gpt", gpt=GPTArgs(layers=4, heads=4, width=128)),
    optim=OptimConfig(name="muon", lr=4e-3, betas=(0.9, 0.95), weight_decay=0.0, grad_clip=1.0, muon_lr_scale=5.0),
    schedule=ScheduleConfig(kind="onecycle", warmup=0.05, start_frac=0.1, end_frac=0.0),
    train=TrainConfig(steps=2000, batch_size=32, target=0.0, stop_on_target=True, eval_every_steps=100,
                      eval_from=0.0),
    methods=MethodsConfig(label_smoothing=0.0, ema=0.0, resize_from=1.0, tta=False),
)
