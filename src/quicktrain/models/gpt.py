"""A GPT (decoder-only transformer) whose modern parts each have a toggle, so one builder gives both nanoGPT's model and
a modded-nanogpt-style one, and every step between them can be ablated one change at a time.

Why: the recipes race a faithful nanoGPT baseline (Karpathy, github.com/karpathy/nanoGPT, model.py) against the
architecture changes of modded-nanogpt (Keller Jordan et al., github.com/KellerJordan/modded-nanogpt, train_gpt.py),
which its speedrun records credit with most of the speed-up; a toggle per change lets a run say which change paid.

Toggles of `gpt(...)`:

| toggle    | modern default (modded-nanogpt)                        | nanoGPT                                         |
|-----------|--------------------------------------------------------|-------------------------------------------------|
| rotary    | True: RoPE on q, k (Su et al. 2021, base 10000)        | False: learned absolute positions `wpe`         |
| qk_norm   | True: weightless RMSNorm of q and k per head           | False: none                                     |
| relu2     | True: ReLU(x)^2 MLP (So et al. 2021, "Primer")         | False: exact GELU MLP                           |
| tied_head | False: separate head Linear                            | True: head shares the token embedding's weight  |
| zero_init | True: attn and MLP out-projections (untied head) = 0   | False: N(0, 0.02), out-proj 0.02/sqrt(2*layers) |

`learned_pos` (default `not rotary`) adds learned positions independently of RoPE. `norm` (default: "rms" with
rotary, "layer" without) picks the block and final norms: "rms" is modded-nanogpt's weightless `F.rms_norm` (no
parameters at all), "layer" is nanoGPT's LayerNorm with a gain and no bias (nanoGPT's bias=False). So switching
`rotary` alone also switches positions and norm; pass `learned_pos` and `norm` explicitly to isolate it. Every toggle
value is an attribute of the model (`model.rotary`, ...).

With rotary=False, qk_norm=False, relu2=False, tied_head=True, zero_init=False this is nanoGPT's GPT with bias=False:
pre-norm blocks, the same parameters (count checked in tests/test_gpt.py), nanoGPT's init in nanoGPT's draw order
(every Linear/Embedding N(0, 0.02), then the residual projections re-drawn at 0.02/sqrt(2*layers), GPT-2 paper
sec. 2.3), dropout after the embedding, in attention and after each residual projection. Differences:
- q, k, v are three Linear(d, d) instead of one Linear(d, 3d): the same parameters and function (nanoGPT's c_attn
  rows stacked), kept apart so Muon orthogonalises each matrix on its own, as modded-nanogpt does;
- `forward(idx)` returns the logits of every position and never a loss (quicktrain applies its own loss; nanoGPT
  returns only the last position when called without targets);
- non-zeroed weights on the modern path are also N(0, 0.02), not modded-nanogpt's uniform init; modded-nanogpt's
  value embeddings, U-net skips, 0.12 attention scale, FP8 head and window attention are left out; its logit
  soft-cap is `softcap` (off by default).

FLOPs (`flops_per_token`): PaLM (Chowdhery et al. 2022, appendix B), as nanoGPT's estimate_mfu: 6*N + 12*L*d*T
training FLOPs per token, N the non-embedding parameters (the head counts: it is a matmul; a lookup table does not),
the attention term for full, non-causal attention (QK^T and AV at 2*T*d each forward, x3 for backward). Causal
kernels skip about half of that; `causal=True` halves the attention term, off by default so MFU compares with
nanoGPT's and PaLM's numbers.

Weight decay: the project's ">= 2-D decayed" rule decays the embeddings and the head (2-D) and not the norm gains,
which is nanoGPT's configure_optimizers rule, kept for the nanoGPT path. The modern path with norm="rms" has no 1-D
parameters at all.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quicktrain.memory.reversible import ReversibleSequence

__all__ = ["GPT", "gpt"]

NormKind = Literal["rms", "layer"]
Rope = tuple[Tensor, Tensor]
ROPE_BASE = 10000.0  # RoFormer's base, as in modded-nanogpt's first rotary records
INIT_STD = 0.02  # nanoGPT / GPT-2
NGRAM_ROWS = (4096, 8192, 16384)  # stdlib_lm's hashed 2-, 3- and 4-gram tables (its ablation row switches these)


class RMSNorm(nn.Module):
    """RMSNorm without a gain (modded-nanogpt's `norm`): no parameters, so nothing to decay or tune."""

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),))


class _ReLU2Fn(torch.autograd.Function):
    """relu(x)^2 with a one-multiply backward, g * 2r (r = relu(x), zero where x < 0). Autograd's relu().square()
    runs PowBackward (pow, two multiplies) and threshold_backward: 1.22 -> 0.97 ms forward + backward on the
    (1024, 512) hidden of a 16x64-token step at width 128, per layer (`python benchmarks/lm_step_cost.py`, 1 thread,
    Xeon, docs/results/lm/step_cost_20261206.json); the values and gradients are bitwise the same
    (tests/test_gpt.py)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        r = F.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (r,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * (r + r)


class ReLU2(nn.Module):
    """ReLU(x)^2, the Primer activation (So et al. 2021) that modded-nanogpt uses in its MLP."""

    def forward(self, x: Tensor) -> Tensor:
        return _ReLU2Fn.apply(x)  # type: ignore[no-any-return]


def _make_norm(kind: NormKind, width: int) -> nn.Module:
    return RMSNorm() if kind == "rms" else nn.LayerNorm(width, bias=False)


def rope_tables(context: int, head_dim: int, base: float = ROPE_BASE) -> Rope:
    """cos, sin of the RoPE angles, each (context, head_dim // 2): position t, frequency base^(-2i/head_dim)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each (first half, second half) pair of x (B, H, T, hd) by its angle (the half-split layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, qk_norm: bool, dropout: float) -> None:
        super().__init__()
        self.heads, self.qk_norm, self.dropout = heads, qk_norm, dropout
        self.c_q = nn.Linear(width, width, bias=False)
        self.c_k = nn.Linear(width, width, bias=False)
        self.c_v = nn.Linear(width, width, bias=False)
        self.c_proj = nn.Linear(width, width, bias=False)
        self.resid_drop = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, heads, T, C // heads)."""
        return x.view(x.size(0), x.size(1), self.heads, -1).transpose(1, 2)

    def forward(self, x: Tensor, rope: Rope | None, ve: Tensor | None = None) -> Tensor:
        b, t, c = x.shape
        q, k, v = self._split(self.c_q(x)), self._split(self.c_k(x)), self._split(self.c_v(x))
        if ve is not None:  # a value embedding of the input tokens, added to the values (`value_embed`)
            v = v + self._split(ve)
        if self.qk_norm:  # per head, before RoPE, as modded-nanogpt
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # autocast may leave the normed q, k in float32 while v is low precision: SDPA needs one dtype
        y = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))


class MLP(nn.Module):
    def __init__(self, width: int, relu2: bool, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width, bias=False)
        self.act = ReLU2() if relu2 else nn.GELU()
        self.c_proj = nn.Linear(4 * width, width, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, width: int, heads: int, norm: NormKind, qk_norm: bool, relu2: bool, dropout: float) -> None:
        super().__init__()
        self.ln_1 = _make_norm(norm, width)
        self.attn = CausalSelfAttention(width, heads, qk_norm, dropout)
        self.ln_2 = _make_norm(norm, width)
        self.mlp = MLP(width, relu2, dropout)

    def forward(self, x: Tensor, rope: Rope | None, ve: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), rope, ve)
        return x + self.mlp(self.ln_2(x))

    # the two residual functions of a reversible stack (memory.reversible: y1 = x1 + F(x2), y2 = x2 + G(y1))
    def f(self, x: Tensor, rope: Rope | None) -> Tensor:
        return self.attn(self.ln_1(x), rope)

    def g(self, x: Tensor, rope: Rope | None) -> Tensor:
        return self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (B, T) int64, T <= context, -> logits (B, T, vocab_size). Build it with `gpt(...)`."""

    def __init__(self, vocab_size: int, context: int, layers: int, heads: int, width: int, *, rotary: bool,
                 qk_norm: bool, relu2: bool, tied_head: bool, zero_init: bool, dropout: float, learned_pos: bool,
                 norm: NormKind, reversible: bool = False, softcap: float = 0.0, embed_norm: bool = False,
                 token_shift: bool = False, value_embed: bool = False, ngram_rows: tuple[int, ...] = ()) -> None:
        super().__init__()
        _check(vocab_size, context, layers, heads, width, rotary, dropout, norm)
        if reversible and value_embed:
            raise ValueError("gpt: value_embed is not available with reversible blocks")
        self.vocab_size, self.context, self.layers, self.heads, self.width = vocab_size, context, layers, heads, width
        self.rotary, self.qk_norm, self.relu2, self.tied_head = rotary, qk_norm, relu2, tied_head
        self.zero_init, self.learned_pos, self.norm = zero_init, learned_pos, norm
        self.softcap = softcap  # logits -> softcap * tanh(logits / softcap); 0 = off
        self.embed_norm = embed_norm  # RMS-normalise the embedding's output (x0), whatever the embedding's scale
        # registration order is nanoGPT's (wte, wpe, h, ln_f, lm_head), so init draws come in its order
        self.wte = nn.Embedding(vocab_size, width)
        self.wpe = nn.Embedding(context, width) if learned_pos else None
        self.drop = nn.Dropout(dropout)
        blocks = (Block(width, heads, norm, qk_norm, relu2, dropout) for _ in range(layers))
        # reversible: the same blocks (same keys, same init draws) as couplings on two copies of the stream
        self.reversible = reversible
        self.blocks = ReversibleSequence(blocks) if reversible else nn.ModuleList(blocks)
        self.ln_f = _make_norm(norm, width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        if tied_head:
            self.head.weight = self.wte.weight  # nanoGPT's weight tying (Press & Wolf 2017)
        if rotary:  # not persistent: the state_dict holds weights only, and the tables are rebuilt from `context`
            cos, sin = rope_tables(context, width // heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights()
        # registered after the head (the last Linear stays the output layer) and the init draws, both zero-initialised,
        # so the default model is unchanged when they are off
        self.token_shift = nn.Parameter(torch.zeros(width)) if token_shift else None
        self.value_embeds = nn.ModuleList(nn.Embedding(vocab_size, width) for _ in range(layers)) \
            if value_embed else None
        # ngram_rows[i]: the table of (i + 2)-grams; 0 = none for that n
        self.ngram_rows = tuple(ngram_rows)
        self.ngrams = nn.ModuleList(nn.Embedding(rows, width) for rows in self.ngram_rows if rows)
        for table in [*(self.value_embeds or ()), *self.ngrams]:
            nn.init.zeros_(table.weight)

    def _init_weights(self) -> None:
        for module in self.modules():  # nanoGPT's _init_weights
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, INIT_STD)
        for block in self.blocks:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                if self.zero_init:  # modded-nanogpt (suggested by @Grad62304977): each block starts as identity
                    nn.init.zeros_(proj.weight)
                else:  # GPT-2 sec. 2.3: residual projections scaled by 1/sqrt(N residual layers)
                    nn.init.normal_(proj.weight, 0.0, INIT_STD / math.sqrt(2 * self.layers))
        if self.zero_init and not self.tied_head:  # modded-nanogpt zeroes its (untied) lm_head
            nn.init.zeros_(self.head.weight)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.size(1)
        if t > self.context:
            raise ValueError(f"sequence length {t} exceeds the model's context {self.context}")
        x = self.wte(idx)
        if self.token_shift is not None:  # x0[t] += w * x0[t-1], per channel (RWKV's token shift, Peng et al. 2023;
            # modded-nanogpt "smears" the previous token's embedding forward with a gate): bytes need bigrams
            x = x + self.token_shift * F.pad(x, (0, 0, 1, 0))[:, :-1]
        # modded-nanogpt's bigram embedding, to n-grams: a byte-level model gets its local statistics from tables
        ns = (n for n, rows in enumerate(self.ngram_rows, start=2) if rows)
        for n, table in zip(ns, self.ngrams):
            x = x + table(ngram_hash(idx, n, self.vocab_size, table.num_embeddings))
        if self.wpe is not None:
            x = x + self.wpe.weight[:t]
        if self.embed_norm:  # modded-nanogpt: x = x0 = norm(embed(idx)), which lets the embedding take a large LR
            x = F.rms_norm(x, (x.size(-1),))
        x = self.drop(x)
        rope = (self.rope_cos[:t], self.rope_sin[:t]) if self.rotary else None
        if self.reversible:  # Reformer (Kitaev et al. 2020): two streams from the embedding, averaged at the end
            x1, x2 = self.blocks(x, x, rope)
            x = (x1 + x2) / 2
        else:
            for i, block in enumerate(self.blocks):
                # modded-nanogpt's value embeddings: each layer's values get a table of the input tokens' own
                x = block(x, rope, self.value_embeds[i](idx) if self.value_embeds is not None else None)
        logits = self.head(self.ln_f(x))
        if self.softcap:  # modded-nanogpt's logit soft-cap (30, later 15), from Gemma 2: bounded logits early on
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, a tied tensor once. `non_embedding` leaves out the lookup tables (positions, the n-gram and
        value tables, and the token embedding unless it is also the head): nanoGPT's get_num_params for a tied
        head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel() if self.wpe is not None else 0
            n -= 0 if self.tied_head else self.wte.weight.numel()
            n -= sum(t.weight.numel() for t in [*self.ngrams, *(self.value_embeds or ())])
        return n

    def flops_per_token(self, seq_len: int | None = None, *, causal: bool = False) -> int:
        """Training FLOPs per token at sequence length `seq_len` (default: context): 6*N + 12*L*d*T (PaLM app. B);
        `causal` halves the attention term (see the module docstring)."""
        t = self.context if seq_len is None else seq_len
        attention = 12 * self.layers * self.width * t
        return 6 * self.num_params() + (attention // 2 if causal else attention)


def ngram_hash(idx: Tensor, n: int, vocab_size: int, rows: int) -> Tensor:
    """Row of each position's n-gram (the n - 1 previous tokens and the current one) in a table of `rows`; the first
    n - 1 positions, which have no full n-gram, on the last row. Exact (the n-gram read as a base-vocab number) when
    the table holds every n-gram, else modded-nanogpt's get_bigram_hash extended: the xor of the ids times large odd
    numbers, mod rows - 1."""
    t = idx.size(1)
    if t < n:  # no full n-gram yet (a short prompt): every position on the reserved row
        return torch.full_like(idx, rows - 1)
    grams = [idx[:, n - 1 - k: t - k] for k in range(n)]  # current, previous, ... (each t - n + 1 long)
    if rows > vocab_size ** n:
        key = sum(g * vocab_size ** k for k, g in enumerate(grams))
    else:
        key = grams[0] * 36313
        for g, m in zip(grams[1:], (27191, 51497, 65537)):
            key = torch.bitwise_xor(key, g * m)
        key = key % (rows - 1)
    return torch.cat((torch.full_like(idx[:, : n - 1], rows - 1), key), dim=1)


def _check(vocab_size: int, context: int, layers: int, heads: int, width: int, rotary: bool, dropout: float,
           norm: str) -> None:
    for name, value in (("vocab_size", vocab_size), ("context", context), ("layers", layers), ("heads", heads),
                        ("width", width)):
        if value < 1:
            raise ValueError(f"gpt: {name} must be >= 1, got {value}")
    if width % heads:
        raise ValueError(f"gpt: width {width} is not a multiple of heads {heads}")
    if rotary and (width // heads) % 2:
        raise ValueError(f"gpt: rotary needs an even head dimension, got {width // heads}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"gpt: dropout must be in [0, 1), got {dropout}")
    if norm not in ("rms", "layer"):
        raise ValueError(f"gpt: norm must be 'rms' or 'layer', got {norm!r}")


def gpt(vocab_size: int, context: int, layers: int = 4, heads: int = 4, width: int = 128, *, rotary: bool = True,
        qk_norm: bool = True, relu2: bool = True, tied_head: bool = False, zero_init: bool = True,
        dropout: float = 0.0, learned_pos: bool | None = None, norm: NormKind | None = None,
        reversible: bool = False, softcap: float = 0.0, embed_norm: bool = False, token_shift: bool = False,
        value_embed: bool = False, ngram_rows: tuple[int, ...] = ()) -> GPT:
    """A GPT; the defaults are the modern (modded-nanogpt) path. `learned_pos` defaults to `not rotary`, `norm` to
    "rms" with rotary and "layer" (nanoGPT's LayerNorm, no bias) without. `reversible` runs the blocks as RevNet
    couplings (quicktrain.memory.reversible; `model.reversible`); `softcap` > 0 caps the logits at +-softcap with a
    tanh (modded-nanogpt); `embed_norm` RMS-normalises the embedding's output (modded-nanogpt); `token_shift` adds
    a learned per-channel share of the previous position's embedding; `value_embed` gives each layer a token table
    added to its attention values (modded-nanogpt); `ngram_rows` = (rows for pairs, for triples, ...) adds
    zero-initialised tables of each position's (previous..., current) tokens to x0 (modded-nanogpt's bigram
    embedding, extended; 0 rows = no table for that n). See the module docstring."""
    return GPT(vocab_size, context, layers, heads, width, rotary=rotary, qk_norm=qk_norm, relu2=relu2,
               tied_head=tied_head, zero_init=zero_init, dropout=dropout,
               learned_pos=(not rotary) if learned_pos is None else learned_pos,
               norm=("rms" if rotary else "layer") if norm is None else norm, reversible=reversible,
               softcap=softcap, embed_norm=embed_norm, token_shift=token_shift, value_embed=value_embed,
               ngram_rows=ngram_rows)
