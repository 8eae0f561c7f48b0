"""The fast next-token default on the built-in corpus (the Python standard library's source, bytes): the speedrun's
techniques (modded-nanogpt) at nanoGPT's CPU model size. Measured against `nanogpt` (nanoGPT's own CPU
configuration) in docs/BENCHMARKS.md, "Language model: stdlib_lm vs nanoGPT's CPU recipe".

Model: 4 layers, 4 heads, width 128 (nanoGPT's CPU size), context 64, with rotary embeddings, QK-norm, ReLU^2, an
untied head and zero-initialised output projections, plus hashed n-gram embeddings (modded-nanogpt's bigram
embedding extended to 3- and 4-grams): zero-initialised tables of 4096 / 8192 / 16384 rows, indexed by a hash of
each position's last 2 / 3 / 4 bytes, added to the token embedding. Muon on the hidden 2-D weights, AdamW on
embeddings, head and gains at one peak LR of 5e-3 (Muon's update scaled to AdamW's RMS, quicktrain.muon), the head at
4x, AdamW betas (0.8, 0.95), Muon momentum 0.85, no warm-up, linear decay to 0 over 70 steps of 16 windows, one
validation check at the end.

Chosen on seed 0 by validation loss at equal steps (2026-12-06, Intel Xeon, 1 thread; every run in
docs/results/lm/selection2.jsonl), each change on top of the previous ones: the previous recipe (warm-up 5%, betas
(0.9, 0.95), momentum 0.95, head at 1x) reached 1.851 in 240 steps and 1.797 in 280; head LR 4x: 1.788 at 240
(2x 1.806, 8x 1.810; embeddings at 10x 1.936, 0.3x 1.893); betas (0.8, 0.95): 1.778; Muon momentum 0.85 and no
warm-up: 1.742; the 2- and 3-gram tables: 1.718 at 120 steps, with the 4-gram table 1.641 at 120, 1.742 at 80 and
1.788 at 70 (seeds 1, 2: 1.786, 1.782); LR 5e-3 at 70 steps: 1.781 / 1.784 / 1.779 on seeds 0 / 1 / 2 (6e-3: 1.783,
3e-3: 1.798 on seed 0), 1.804 at 65 steps. Each change taken out again at 70 steps (LR 4e-3, seed 0): no n-gram
tables 2.278, head 1x 1.847, betas (0.9, 0.95) 1.807, momentum 0.95 1.800, warm-up 5% 1.797. Earlier
(2026-12-03): Muon at 4e-3 beat 8e-3 and AdamW by far, the modern blocks beat nanoGPT's, 16 windows a step needed
fewer tokens than 32. Not paying here: a logit soft-cap, an RMS-normalised embedding,
embeddings at a higher LR, value embeddings, a per-channel token shift (once the bigram table is in), a 5-gram table,
a held peak with a late cool-down, gradient clipping off, Adam beta2 0.99, 8 / 12 / 24 / 32 windows a step at equal
tokens (numbers in selection2.jsonl).
Cost: the tables add about 10 ms a step (dense AdamW over their 3.7M entries), the one-function ReLU^2 and the
batched Newton-Schulz (quicktrain.models.gpt, quicktrain.muon) take about as much off, so a step costs what the
previous recipe's did (~73 ms, 1 thread). Train clock to 1.800, seeds 0 / 1 / 2, interleaved with the previous
recipe (its first check, at step 300) on one machine whose other core was busy: 7.4 / 6.7 / 7.3 s vs 25.5 / 26.8 /
25.3 s.
Precision, layout and compile are `auto` (measured per machine). The target 1.800 is L*, the `nanogpt` recipe's
validation loss after its 2000 steps on this corpus.
"""

from quicktrain.config import (Config, DataConfig, GPTArgs, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig,
                               TrainConfig)
from quicktrain.models.gpt import NGRAM_ROWS

CONFIG = Config(
    name="stdlib_lm",
    tuned_for="",  # next-token constants are not adapted (quicktrain.adapt is for classification)
    data=DataConfig(name="stdlib", context=64, augment="none"),
    model=ModelConfig(name="gpt", gpt=GPTArgs(layers=4, heads=4, width=128, ngram_rows=NGRAM_ROWS)),
    optim=OptimConfig(name="muon", lr=5e-3, betas=(0.8, 0.95), weight_decay=0.0, grad_clip=1.0, muon_lr_scale=1.0,
                      muon_momentum=0.85, head_lr_scale=4.0),
    schedule=ScheduleConfig(kind="onecycle", warmup=0.0, start_frac=0.1, end_frac=0.0),
    train=TrainConfig(steps=70, batch_size=16, target=1.800, stop_on_target=True, eval_every_steps=70,
                      eval_from=1.0),
    methods=MethodsConfig(label_smoothing=0.0, ema=0.0, resize_from=1.0, tta=False),
)
