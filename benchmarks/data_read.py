"""What reading training data costs: token windows streamed (pread) vs resident, a held-open np.memmap's resident
growth vs pread's, and classification batches streamed through a DataLoader vs device-resident.

    python benchmarks/data_read.py [--shard-mb 400] [--windows 131072] [--threads 1]

1. Token windows: `TokenWindows` and `ResidentWindows` on the built-in corpus, microseconds a batch at
   (12 x 64) and (64 x 256), median of 5 blocks of 200 batches.
2. Resident memory: `--windows` random windows of 65 tokens from a `--shard-mb` MB shard of random tokens written
   for the purpose; RssFile (/proc/self/status) before and after, reading with TokenWindows vs slicing an np.memmap
   held open (what nanoGPT avoids by re-creating its memmap every batch).
3. Classification: batches/s of batch 128 from an in-memory TensorDataset (1 x 40 and 3 x 32 x 32), DeviceBatches
   vs StreamBatches with 0 and 2 DataLoader workers: the DataLoader's own overhead, the cheapest items there are.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from quicktrain.data.batches import DeviceBatches
from quicktrain.data.corpus import stdlib_corpus
from quicktrain.data.stream import StreamBatches
from quicktrain.data.tokens import ResidentWindows, TokenFile, TokenWindows, open_tokens
from quicktrain.measure import device_name


def _rss_file_kb() -> int:
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["RssFile"].split()[0])


def _per_batch_us(source, batch: int, blocks: int = 5, n: int = 200) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(n):
            source.next(batch)
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def token_windows() -> dict[str, float]:
    data = open_tokens(stdlib_corpus())
    out = {}
    for batch, context in ((12, 64), (64, 256)):
        for name, cls in (("streamed", TokenWindows), ("resident", ResidentWindows)):
            out[f"{name} {batch}x{context} us/batch"] = _per_batch_us(cls(data.train, context, 0), batch)
    return out


def memmap_vs_pread(shard_mb: int, windows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.bin"
        np.random.default_rng(0).integers(0, 256, shard_mb << 19, dtype=np.uint16).tofile(path)
        starts = np.random.default_rng(1).integers(0, (shard_mb << 19) - 65, windows)
        before = _rss_file_kb()
        src = TokenWindows([TokenFile.open(path)], 64, 0)
        for _ in range(windows // 64):
            src.next(64)
        after_pread = _rss_file_kb()
        src.close()
        mm = np.memmap(path, dtype=np.uint16, mode="r")
        for s in starts:
            np.asarray(mm[s : s + 65]).sum()
        after_memmap = _rss_file_kb()
        del mm
    return {"shard_mb": shard_mb, "windows": windows, "rss_file_growth_kb_pread": after_pread - before,
            "rss_file_growth_kb_memmap": after_memmap - after_pread}


def classification_streaming() -> dict[str, float]:
    out = {}
    for shape in ((1, 40), (3, 32, 32)):
        x, y = torch.randn(20_000, *shape), torch.randint(0, 10, (20_000,))
        tag = "x".join(map(str, shape))
        out[f"{tag} resident batches/s"] = 1e6 / _per_batch_us(DeviceBatches(x, y, 0), 128, n=100)
        for workers in (0, 2):
            src = StreamBatches(TensorDataset(x, y), 0, workers=workers, num_classes=10)
            out[f"{tag} streamed {workers} workers batches/s"] = 1e6 / _per_batch_us(src, 128, n=100)
            src.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shard-mb", type=int, default=400)
    ap.add_argument("--windows", type=int, default=131072)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report = {"benchmark": "data_read", "device": device_name(torch.device("cpu")), "torch": torch.__version__,
              "token_windows": token_windows(), "resident_memory": memmap_vs_pread(args.shard_mb, args.windows),
              "classification": classification_streaming()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
