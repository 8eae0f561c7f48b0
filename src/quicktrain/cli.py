"""The command line. `main(argv) -> int` so tests call it in-process.

Exit statuses: 0 success; 1 the run diverged (non-finite loss), a checkpoint could not be written, or (under
torchrun) a peer rank failed or did not answer within system.dist_timeout; 2 bad input (one line on stderr, no
traceback); 75 stopped by SIGTERM/SIGINT/SIGUSR1 after writing a checkpoint (resume it). Under torchrun only rank 0
prints, except errors that are a rank's own.
Config overrides are any `--section.key=value` (or `--section.key value`) arguments; they are checked against the
config dataclasses (quicktrain.config).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from quicktrain.checkpoint import CheckpointWriteError
from quicktrain.errors import ConfigError, Preempted, TrainingDiverged, UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a one-line UserError (exit 2) instead of usage text and SystemExit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def _split_overrides(rest: Sequence[str]) -> list[str]:
    """`--a.b=v` and `--a.b v` become "a.b=v"; anything else is an error naming the argument."""
    out, i = [], 0
    while i < len(rest):
        arg = rest[i]
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "." not in key:
            raise UserError(f"unrecognised argument {arg!r} (config overrides look like --optim.lr=3e-3)")
        if "=" in arg:
            out.append(arg[2:])
        elif i + 1 < len(rest):
            out.append(f"{key}={rest[i + 1]}")
            i += 1
        else:
            raise ConfigError(f"config key {key}: missing value (use --{key}=VALUE)")
        i += 1
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", type=float, help="validation accuracy to reach, a fraction (e.g. 0.94)")
    p.add_argument("--instance",
                   help="price table row for the cost columns (default: c7a.large; see `quicktrain prices`)")
    p.add_argument("--prices", metavar="FILE", help="a TOML price table of your own, merged over the shipped one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="quicktrain", allow_abbrev=False,
                     description="Train to a target accuracy with the fast techniques on, and measure time and cost.",
                     epilog="Config overrides: --section.key=value, e.g. --optim.lr=3e-3 --train.epochs=5")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train one recipe to its target and report time, accuracy and cost",
                         allow_abbrev=False)
    run.add_argument("recipe", nargs="?", default="mnist1d", help="built-in name or path to a .py defining CONFIG")
    run.add_argument("--seed", type=int, help="random seed (init, data order, augmentation)")
    run.add_argument("--run-dir", metavar="DIR", help="where config.json, metrics.jsonl, report.md, plots and "
                     "checkpoints go; a run there that was stopped resumes from its newest valid checkpoint")
    run.add_argument("--force", action="store_true",
                     help="resume even if the config, data, torch version or machine changed")
    _common(run)

    resume = sub.add_parser("resume", help="continue a stopped run from its newest valid checkpoint",
                            allow_abbrev=False)
    resume.add_argument("run_dir", metavar="DIR", help="the run directory")
    resume.add_argument("--force", action="store_true",
                        help="resume even if the data, torch version or machine changed")
    resume.add_argument("--no-progress", action="store_true", help="no progress bar")

    bench = sub.add_parser("bench", help="recipes x seeds side by side on this machine; --ablate for techniques",
                           allow_abbrev=False)
    bench.add_argument("recipes", nargs="*", default=["mnist1d", "plain"], help="recipes (first is the one compared)")
    bench.add_argument("--seeds", type=int, default=5, help="seeds per recipe (default 5; 20 for claims)")
    bench.add_argument("--ablate", action="store_true", help="also run the first recipe minus each technique")
    bench.add_argument("--out", metavar="DIR", help="where bench.md, bench.json and the plots go")
    bench.add_argument("--target-from", metavar="RECIPE",
                       help="this recipe runs first in each seed; its final validation value (e.g. nanogpt's loss "
                            "after its 2000 steps) is that seed's target for the others")
    _common(bench)

    lr = sub.add_parser("lr-find", help="LR range test on the recipe's real model and data; suggests the peak LR",
                        allow_abbrev=False)
    lr.add_argument("recipe", nargs="?", default="mnist1d")
    lr.add_argument("--apply", action="store_true", help="then train the recipe with the suggested peak LR")
    lr.add_argument("--start-lr", type=float, default=1e-6)
    lr.add_argument("--end-lr", type=float, default=10.0)
    lr.add_argument("--run-dir", metavar="DIR", help="where lr_find.json, lr_find.png (and the --apply run) go")
    _common(lr)

    plan = sub.add_parser("plan-memory", help="the memory planner's candidates and choice for a recipe under a cap "
                          "(--system.memory=SIZE; on CUDA the free memory by default)", allow_abbrev=False)
    plan.add_argument("recipe", nargs="?", default="mnist1d")
    _common(plan)

    noise = sub.add_parser("noise-scale", help="train a recipe measuring the gradient noise scale; plot it and "
                           "recommend a batch size", allow_abbrev=False)
    noise.add_argument("recipe", nargs="?", default="mnist1d")
    noise.add_argument("--every", type=int, default=5, help="steps between measurements (default 5)")
    noise.add_argument("--out", metavar="DIR", help="where noise.json and noise.png go")
    _common(noise)

    tune = sub.add_parser("tune", help="budgeted search (Optuna TPE + Hyperband) over the recipe's search space",
                          allow_abbrev=False)
    tune.add_argument("recipe", nargs="?", default="mnist1d")
    tune.add_argument("--budget", default="600s", help="600s (wall seconds), 20000steps, or 0.50usd (at --instance)")
    tune.add_argument("--storage", metavar="URL", help="sqlite:///PATH, journal:PATH (several workers), postgresql://...")
    tune.add_argument("--study-name", help="share a study between workers (default: RECIPE-OBJECTIVE)")
    tune.add_argument("--objective", choices=("time", "accuracy"), default="time",
                      help="time to the target (default) or validation accuracy at the candidate's budget")
    tune.add_argument("--trials", type=int, help="stop after this many complete or pruned trials (over all workers)")
    tune.add_argument("--seeds", type=int, default=3, help="seeds per candidate for the time objective")
    tune.add_argument("--margin", type=float, default=0.01,
                      help="time objective: mean validation must reach target + margin")
    tune.add_argument("--seed", type=int, default=0, help="sampler seed")
    tune.add_argument("--confirm-seeds", type=int, default=10,
                      help="rerun the best candidates on this many fresh seeds and return the best confirmed (0: off)")
    tune.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats")
    tune.add_argument("--compare", choices=("grid",), help="also run the space as a grid and compare compute")
    tune.add_argument("--run-dir", metavar="DIR", help="where the best recipe, tune.md, trials.json and plots go")
    _common(tune)

    prep = sub.add_parser("prepare-text", help="write a text corpus (a UTF-8 file or a directory of them) as token "
                          "shards in nanoGPT's layout (train.bin, val.bin, meta.pkl)", allow_abbrev=False)
    prep.add_argument("source", help="a text file or a directory of text files")
    prep.add_argument("out", help="the directory to write (data.path= for training)")
    prep.add_argument("--tokenizer", choices=("bytes", "bpe"), default="bytes",
                      help="bytes (vocabulary 256, default) or a byte-level BPE trained on the corpus (tokenizers)")
    prep.add_argument("--vocab-size", type=int, default=0, help="BPE vocabulary size (default 4096)")

    sample = sub.add_parser("sample", help="print text from a trained next-token run", allow_abbrev=False)
    sample.add_argument("run_dir", metavar="RUN_DIR")
    sample.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    sample.add_argument("--tokens", type=int, default=256, help="new tokens to generate")
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    sample.add_argument("--seed", type=int, default=0)

    sub.add_parser("recipes", help="list the built-in recipes", allow_abbrev=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from quicktrain.measure import process_age

    origin = time.perf_counter() - process_age()
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv), origin)
    except UserError as exc:
        if _rank() == 0 or not isinstance(exc, ConfigError):  # a config error is every rank's: said once
            print(f"quicktrain: error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"quicktrain: training diverged: {exc}", file=sys.stderr)
        return 1
    except CheckpointWriteError as exc:
        print(f"quicktrain: error: {exc}", file=sys.stderr)
        return 1
    except Preempted as exc:
        print(f"quicktrain: stopped by {exc}; continue with `quicktrain resume DIR`", file=sys.stderr)
        return 75
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except RuntimeError as exc:
        if not _peer_failure(exc):
            raise
        first = str(exc).strip().splitlines()[0]
        print(f"quicktrain: error: rank {_rank()}: a peer rank failed or did not answer within system.dist_timeout: "
              f"{first}", file=sys.stderr)
        return 1


def _rank() -> int:
    import os

    value = os.environ.get("RANK", "0")
    return int(value) if value.isdigit() else 0


def _peer_failure(exc: RuntimeError) -> bool:
    """A collective that failed because another rank died or hangs (gloo and NCCL raise RuntimeErrors)."""
    from quicktrain.dist import env_world_size

    if env_world_size() <= 1:
        return False
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        k in text for k in ("gloo", "NCCL", "Timed out", "Connection closed", "Connection reset", "c10d"))


def entry() -> None:
    sys.exit(main())


def _dispatch(argv: list[str], origin: float) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "recipes":
        from quicktrain.recipes import BUILTIN

        print("\n".join(BUILTIN))
        return 0
    if args.command in ("prepare-text", "sample"):
        if rest:
            raise UserError(f"{args.command} takes no config overrides (got {rest[0]!r})")
        return _prepare_text(args) if args.command == "prepare-text" else _sample(args)
    if args.command == "resume":
        if rest:
            raise UserError(f"resume takes no config overrides (got {rest[0]!r}): a resumed run keeps its config")
        return _resume(args, origin)
    from quicktrain.dist import env_world_size

    if env_world_size() > 1 and args.command not in ("run", "noise-scale"):
        raise UserError(f"{args.command} runs in one process; under torchrun use run, resume or noise-scale")
    overrides = _split_overrides(rest)
    if args.target is not None:
        overrides.append(f"train.target={args.target}")
    if args.command == "run":
        return _run(args, overrides, origin)
    if args.command == "lr-find":
        return _lr_find(args, overrides, origin)
    if args.command == "tune":
        return _tune(args, overrides)
    if args.command == "plan-memory":
        return _plan_memory(args, overrides)
    if args.command == "noise-scale":
        return _noise_scale(args, overrides)
    return _bench(args, overrides)


def _configure(recipe: str, overrides: list[str]) -> Any:
    from quicktrain.config import apply_overrides
    from quicktrain.recipes import load_recipe

    return apply_overrides(load_recipe(recipe), overrides)


def _run(args: argparse.Namespace, overrides: list[str], origin: float) -> int:
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    from quicktrain.dist import setup

    cfg = _configure(args.recipe, overrides)
    run_dir = (Path(args.run_dir) if args.run_dir
               else Path("runs") / cfg.name / time.strftime(f"%Y%m%d-%H%M%S-s{cfg.train.seed}"))
    # under torchrun: rank 0's name on every rank
    run_dir = Path(setup(cfg.system, cfg.train.batch_size).broadcast_json(str(run_dir)))
    return _train_and_report(cfg, run_dir, args.instance, args.prices, not args.no_progress, origin, args.force)


def _resume(args: argparse.Namespace, origin: float) -> int:
    from quicktrain.config import check_config, from_dict

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} is not a quicktrain run directory (no config.json)")
    try:
        cfg = check_config(from_dict(json.loads((run_dir / "config.json").read_text())))
        invocation = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    except ValueError:
        raise UserError(f"{run_dir / 'config.json'} is not valid JSON") from None
    return _train_and_report(cfg, run_dir, invocation.get("instance"), invocation.get("prices"),
                             not args.no_progress, origin, args.force)


def _train_and_report(cfg: Any, run_dir: Path, instance: str | None, prices: str | None, progress: bool,
                      origin: float, force: bool) -> int:
    from quicktrain.dist import setup
    from quicktrain.loop import train

    main = setup(cfg.system, cfg.train.batch_size).is_main  # under torchrun, rank 0 alone prints and writes
    if main:
        _print_config(cfg)
    created = not run_dir.exists()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "run.json").exists():  # how the run was started; a resume keeps it
            (run_dir / "run.json").write_text(json.dumps({"instance": instance, "prices": prices}) + "\n")
    try:
        result = train(cfg, run_dir=run_dir, instance=instance, prices_path=prices, progress=progress,
                       wall_origin=origin, log=lambda m: print(m, flush=True), force=force)
    except UserError:
        if main and created and not (run_dir / "checkpoints").exists():  # bad input: leave nothing behind
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if main:
        _print_summary(result)
        print(json.dumps(result.to_json()), flush=True)
    return 0


def _lr_find(args: argparse.Namespace, overrides: list[str], origin: float) -> int:
    from dataclasses import replace

    from quicktrain.lr_find import find_lr
    from quicktrain.plots import plot_lr_find

    cfg = _configure(args.recipe, overrides)
    out = Path(args.run_dir) if args.run_dir else Path("runs") / "lr-find" / time.strftime(f"{cfg.name}-%Y%m%d-%H%M%S")
    try:
        found = find_lr(cfg, start_lr=args.start_lr, end_lr=args.end_lr)
    except ValueError as exc:
        raise UserError(f"lr-find: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    summary = found.to_json() | {"recipe": cfg.name, "recipe_lr": cfg.optim.lr, "plot": str(out / "lr_find.png")}
    (out / "lr_find.json").write_text(json.dumps(summary | {"lrs": found.lrs, "losses": found.losses,
                                                             "smoothed": found.smoothed}, indent=1) + "\n")
    plot_lr_find(found, out / "lr_find.png", recipe_lr=cfg.optim.lr)
    print(f"suggested peak LR {found.suggested_lr:.3g} ({found.rule}; {found.confidence} confidence: the rules span "
          f"{found.low:.3g}-{found.high:.3g}); the recipe's is {cfg.optim.lr:.3g}. {found.steps} steps of "
          f"{found.sweep_batch_size} examples, {found.seconds:.2f} s; {found.stopped}. Curve: {out / 'lr_find.png'}")
    if not args.apply:
        print(json.dumps(summary), flush=True)
        return 0
    applied = replace(cfg, optim=replace(cfg.optim, lr=found.suggested_lr))
    from quicktrain.loop import train

    result = train(applied, run_dir=out / "run", instance=args.instance, prices_path=args.prices,
                   progress=not args.no_progress, wall_origin=origin, log=lambda m: print(m, flush=True))
    _print_summary(result)
    print(json.dumps(result.to_json() | {"suggested_lr": found.suggested_lr, "seconds": found.seconds,
                                         "lr_find": summary}), flush=True)
    return 0


def _plan_memory(args: argparse.Namespace, overrides: list[str]) -> int:
    from dataclasses import asdict

    from quicktrain.run import plan_memory_for

    cfg = _configure(args.recipe, overrides)
    plan = plan_memory_for(cfg, say=lambda m: print(m, flush=True))
    print(plan.table())
    rows = [asdict(c) | {"fits": c.fits} for c in plan.candidates]
    print(json.dumps({"recipe": cfg.name, "cap": plan.cap, "batch": plan.batch, "seconds": plan.seconds,
                      "choice": plan.memory(), "candidates": rows}), flush=True)
    return 0


def _noise_scale(args: argparse.Namespace, overrides: list[str]) -> int:
    from quicktrain.dist import setup
    from quicktrain.noise_scale import measure_noise_scale, table

    if args.every < 1:
        raise UserError(f"--every must be >= 1 (got {args.every})")
    cfg = _configure(args.recipe, overrides)
    out = Path(args.out) if args.out else Path("runs") / time.strftime(f"noise-{cfg.name}-%Y%m%d-%H%M%S")
    out = Path(setup(cfg.system, cfg.train.batch_size).broadcast_json(str(out)))
    summary = measure_noise_scale(cfg, args.every, out, progress=not args.no_progress,
                                  log=lambda m: print(m, flush=True))
    if _rank() == 0:
        history = json.loads((out / "noise.json").read_text())["history"]
        print(table(history))
        rec = summary["recommended_batch_size"]
        where = "at the target" if summary["reached_target"] else "at the end (target not reached)"
        b = summary["b_simple"]
        print(f"B_simple {where}: {f'{b:.1f}' if b is not None else '–'}; recommended batch size: "
              f"{rec if rec is not None else '– (no positive estimate)'} (this run: {summary['batch_size']}); "
              f"plot: {out / 'noise.png'}")
        print(json.dumps(summary), flush=True)
    return 0


def _tune(args: argparse.Namespace, overrides: list[str]) -> int:
    from quicktrain.tuning import compare_grid, tune

    if overrides or args.target is not None:
        raise UserError("tune takes no config overrides: declare the search space in the recipe (SEARCH_SPACE), "
                        "or copy the recipe and change it")
    if args.compare == "grid":
        report = compare_grid(args.recipe, log=lambda m: print(m, flush=True))
        print(json.dumps(report), flush=True)
        return 0
    result = tune(args.recipe, args.budget, storage=args.storage, study_name=args.study_name, objective=args.objective,
                  trials=args.trials, seeds=args.seeds, margin=args.margin, seed=args.seed, run_dir=args.run_dir,
                  instance=args.instance, heartbeat=args.heartbeat, confirm_seeds=args.confirm_seeds,
                  log=lambda m: print(m, flush=True))
    print(json.dumps(result.to_json()), flush=True)
    return 0


def _bench(args: argparse.Namespace, overrides: list[str]) -> int:
    from quicktrain.bench import run_bench

    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1 (got {args.seeds})")
    configs = [_configure(r, overrides) for r in args.recipes]
    out = Path(args.out) if args.out else Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")
    summary = run_bench(configs, seeds=args.seeds, ablate=args.ablate, out_dir=out, instance=args.instance,
                        prices_path=args.prices, progress=not args.no_progress, log=lambda m: print(m, flush=True),
                        target_from=args.target_from)
    print(json.dumps(summary), flush=True)
    return 0


def _prepare_text(args: argparse.Namespace) -> int:
    from quicktrain.data.corpus import prepare_text

    if args.vocab_size < 0 or (args.vocab_size and args.tokenizer == "bytes"):
        raise UserError("--vocab-size is for --tokenizer bpe (a positive number of tokens)")
    summary = prepare_text(Path(args.source), Path(args.out), tokenizer=args.tokenizer, vocab_size=args.vocab_size)
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in summary.items()}), flush=True)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from quicktrain.lm_run import sample_text

    if args.tokens < 1 or args.temperature <= 0 or args.top_k < 0:
        raise UserError("sample: --tokens must be >= 1, --temperature > 0 and --top-k >= 0")
    print(sample_text(Path(args.run_dir), args.prompt, args.tokens, args.temperature, args.top_k or None, args.seed,
                      warn=lambda m: print(m, file=sys.stderr)))
    return 0


def _print_config(cfg: Any) -> None:
    from dataclasses import fields, is_dataclass

    print(f"recipe {cfg.name}")
    for f in fields(cfg):
        section = getattr(cfg, f.name)
        if is_dataclass(section):
            items = " ".join(f"{k.name}={getattr(section, k.name)}" for k in fields(section)
                             if not is_dataclass(getattr(section, k.name)))
            print(f"  {f.name}: {items}")
    sys.stdout.flush()


def _print_summary(result: Any) -> None:
    from quicktrain.memory.tracking import describe as describe_memory
    from quicktrain.report import format_pct, format_seconds, format_usd, markdown_table

    util = f"{100 * result.utilisation:.1f}%" if result.utilisation is not None else "–"
    lm = result.metric == "loss"
    target = f"loss {result.target:.4g}" if lm else format_pct(result.target)
    figure = ["test loss / validation loss", f"{result.test_loss:.4f} / {result.val_loss:.4f}"] if lm else \
        ["test accuracy", format_pct(result.test_acc)]
    rows = [
        ["reached target", f"{'yes' if result.reached_target else 'no'} ({target} validation)"],
        ["time to target (train clock)", format_seconds(result.seconds_to_target)],
        ["train clock / wall", f"{format_seconds(result.train_seconds)} / {format_seconds(result.wall_seconds)}"],
        figure,
        ["stopped by", result.stopped_by],
        ["adaptive defaults", "; ".join(result.adapted) if result.adapted else "no (the recipe's constants)"],
        ["steps / samples / epochs", f"{result.steps} / {result.samples} / {result.epochs:.2f}"],
        ["ranks x threads, machines", f"{result.world_size} x {result.threads or '–'}, {result.nodes}"],
        ["memory", describe_memory(result.memory)],
        ["model FLOPs, utilisation",
         f"{result.flops:.3g}, {util} of {result.peak_flops / 1e9:.0f} GFLOP/s ({result.precision})"],
        [f"cost on {result.instance}",
         (f"{format_usd(result.cost_usd_on_demand)} on-demand, {format_usd(result.cost_usd_spot)} spot "
          f"(prices of {result.price_date})")],
        ["run directory", str(result.run_dir)],
    ]
    print(markdown_table(["", result.recipe], rows))
