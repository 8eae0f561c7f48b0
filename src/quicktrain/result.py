"""What a run returns and reports: `Result` (the final JSON line is `Result.to_json()`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    recipe: str
    seed: int
    target: float
    reached_target: bool
    seconds_to_target: float | None  # train clock at the first validation check that reached the target
    train_seconds: float
    wall_seconds: float
    test_acc: float  # at the end of the run (= at the target when the run stops on it); LM: next-token accuracy
    test_acc_at_target: float | None
    val_acc: float
    steps: int
    samples: int
    epochs: float
    flops: float  # model FLOPs of the training steps (forward + backward)
    utilisation: float | None  # flops / train_seconds / measured peak matmul rate for the precision used
    peak_flops: float
    precision: str
    compile: bool
    channels_last: bool
    device: str
    instance: str
    cost_usd_on_demand: float  # train_seconds at the instance's price, times the machines (nodes) used
    cost_usd_spot: float
    price_date: str
    price_source: str
    torch_version: str
    weights_sha256: str = ""  # hash of the final parameters and buffers in a canonical order (state.weights_sha256)
    restarts: int = 0  # times this run was resumed from a checkpoint
    # wall time from each last checkpoint to its resumption (work redone, downtime)
    seconds_lost_to_restarts: float = 0.0
    peak_lr: float = 0.0  # the peak LR used (the LR finder's, when optim.lr_find is on)
    run_dir: str | None = None
    adapted: list[str] = field(default_factory=list)  # why the recipe's constants were replaced (quicktrain.adapt)
    stopped_by: str = ""  # target | budget | max_seconds | schedule | on_eval
    notes: list[str] = field(default_factory=list)  # the never-worse-than-plain guard's findings, for the report
    world_size: int = 1  # processes (ranks) that trained together under torchrun (quicktrain.dist)
    nodes: int = 1  # machines they ran on: cost_usd_* is train_seconds x nodes x the instance's price
    threads: int = 0  # intra-op CPU threads per rank (0 on CUDA)
    sync_bn: bool = False  # batch norm statistics over all ranks (system.sync_bn)
    metric: str = "acc"  # what the target is in: acc (higher is better) or loss (nats per token, lower is better)
    val_loss: float | None = None  # at the end of the run
    test_loss: float | None = None
    test_loss_at_target: float | None = None
    data_path: str = ""  # how the training data was read: resident | streamed (printed at setup too)
    # params / grads / optimizer / activations bytes (one micro-batch's, measured after training), peak (CUDA), and
    # the memory settings: micro_batch, checkpoint, reversible, planned, cap, predicted_peak, backoffs
    memory: dict[str, Any] = field(default_factory=dict)
    # the gradient noise scale (noise.every > 0): every, measurements, b_simple (last), b_simple_at_target
    noise: dict[str, Any] = field(default_factory=dict)
    noise_history: list[dict[str, float]] = field(default_factory=list, repr=False)  # quicktrain.noise, per measure
    metrics: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "loss"

    @property
    def val_value(self) -> float:
        """The final validation figure in the target's metric."""
        return float(getattr(self, f"val_{self.metric}"))

    @property
    def test_value(self) -> float:
        """The final test figure in the target's metric."""
        return float(getattr(self, f"test_{self.metric}"))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("metrics")
        out.pop("noise_history")
        return out
