"""nanoGPT's README CPU configuration (karpathy/nanoGPT, "I only have a macbook"), reproduced on the built-in corpus:

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
        --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
        --dropout=0.0

4 layers, 4 heads, width 128, context 64, batch 12, 2000 iterations; AdamW lr 1e-3, betas (0.9, 0.99), weight decay
0.1 on 2-D weights (embeddings included, as nanoGPT's optimizer groups do), 100 warm-up steps (linear from lr/101),
cosine to 1e-4 at step 2000, gradient clipping at 1.0; GELU, LayerNorm without bias, learned positions, tied head,
GPT-2 initialisation, no dropout; fp32 (nanoGPT runs autocast only on CUDA) and no compile. Checks every 250 steps
(its eval_interval). It is the baseline `stdlib_lm` is measured against: its validation loss after the 2000 steps
is the target L* (docs/BENCHMARKS.md).
"""

from quicktrain.config import (Config, DataConfig, GPTArgs, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig,
                               SystemConfig, TrainConfig)

CONFIG = Config(
    name="nanogpt",
    tuned_for="",  # nanoGPT's constants, fixed: never adapted
    data=DataConfig(name="stdlib", context=64, augment="none"),
    model=ModelConfig(name="gpt", gpt=GPTArgs(layers=4, heads=4, width=128, rotary=False, qk_norm=False, relu2=False,
                                              tied_head=True, zero_init=False, dropout=0.0)),
    optim=OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, no_decay_1d=True, grad_clip=1.0),
    schedule=ScheduleConfig(kind="cosine", warmup=100 / 2000, start_frac=1 / 101, end_frac=0.1),
    train=TrainConfig(steps=2000, batch_size=12, target=0.0, stop_on_target=False, eval_every_steps=250,
                      eval_from=0.0),
    methods=MethodsConfig(label_smoothing=0.0, ema=0.0, resize_from=1.0, tta=False),
    system=SystemConfig(precision="fp32", compile="off", channels_last="off"),
)
