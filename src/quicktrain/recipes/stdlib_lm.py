"""The fast next-token default on the built-in corpus (the Python standard library's source, bytes): the speedrun's
techniques (modded-nanogpt) at nanoGPT's CPU model size. Measured against `nanogpt` (nanoGPT's own CPU
configuration) in docs/BENCHMARKS.md, "Language model: stdlib_lm vs nanoGPT's CPU recipe".

Model: 4 layers, 4 heads, width 128 (nanoGPT's CPU size), context 64, with rotary embeddings, QK-norm, ReLU^2, an
untied head and zero-initialised output projections. Muon on the hidden 2-D weights, AdamW on embeddings, head and
gains, one peak LR of 4e-3 for both (Muon's update scaled to AdamW's RMS, quicktrain.muon), warm-up 5% then linear
decay to 0 over 400 steps of 16 windows. Chosen on validation loss at equal steps (2026-12-03, Intel Xeon, 1 thread):
Muon at 4e-3 beat 8e-3 and AdamW at 4e-3 by far (600 steps of 16: 1.63 / 1.67 / 2.23), the modern blocks beat
nanoGPT's blocks under Muon (300 steps of 32: 1.71 vs 1.79), and 16 windows a step needed fewer tokens to the
target than 32. Sequence-length warm-up (methods.resize_from) is available and off: not measured to pay here.
Precision, layout and compile are `auto` (measured per machine). The target 1.805 is the `nanogpt` recipe's
validation loss after its 2000 steps on this corpus (L*); checks from 75% of the budget, every 40 steps, because
each check costs about as much as 20 training steps.
"""

from quicktrain.config import (Config, DataConfig, GPTArgs, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig,
                               TrainConfig)

CONFIG = Config(
    name="stdlib_lm",
    tuned_for="",  # next-token constants are not adapted (quicktrain.adapt is for classification)
    data=DataConfig(name="stdlib", context=64, augment="none"),
    model=ModelConfig(name="gpt", gpt=GPTArgs(layers=4, heads=4, width=128)),
    optim=OptimConfig(name="muon", lr=4e-3, betas=(0.9, 0.95), weight_decay=0.0, grad_clip=1.0, muon_lr_scale=1.0),
    schedule=ScheduleConfig(kind="onecycle", warmup=0.05, start_frac=0.1, end_frac=0.0),
    train=TrainConfig(steps=400, batch_size=16, target=1.805, stop_on_target=True, eval_every_steps=40,
                      eval_from=0.75),
    methods=MethodsConfig(label_smoothing=0.0, ema=0.0, resize_from=1.0, tta=False),
)
