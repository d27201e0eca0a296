"""``python -m core …`` — every computation of the app is also a command.

Machine-readable commands print JSON on stdout; progress goes to stderr (tqdm); errors print one
line ``error: …`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from core.errors import StudioError


@contextmanager
def _tqdm_progress(desc: str, enabled: bool = True):
    """A progress callback bound to a tqdm bar on stderr (percent of the whole command)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=100, desc=desc, file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def progress(fraction: float, message: str = "") -> None:
        bar.n = round(100 * fraction, 1)
        bar.set_postfix_str(message[:60], refresh=False)
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()


def _cmd_describe(args) -> int:
    from core.data import load_dataset

    with _tqdm_progress("dataset", not args.quiet) as progress:
        ds = load_dataset(args.data, progress=progress)
    print(json.dumps(ds.describe(), indent=1))
    return 0


def _resolve_features(args):
    """(source, layers) from ``--features FSPEC`` or ``--model MSPEC --layers …``."""
    from core.errors import ConfigError
    from core.features import source_for

    if bool(args.features) == bool(args.model):
        raise ConfigError("give exactly one of --features FSPEC or --model MSPEC (with --layers)")
    if args.features:
        if args.layers or args.mode or args.precision:
            raise ConfigError("--layers, --mode and --precision go with --model, not with --features")
        source = source_for(args.features, args.data)
        return source, source.layers()
    from core.models import parse_layers

    source = source_for(args.model, args.data, args.mode, args.precision)
    return source, parse_layers(source, args.layers or "all")


def parse_story_list(text: str) -> tuple:
    """Stories from ``a,b,c`` or from a file (``@FILE`` or an existing path): one story per line
    (``#`` comments) or a JSON list."""
    from core.errors import ConfigError

    text = str(text).strip()
    path = Path(text[1:] if text.startswith("@") else text).expanduser()
    if text.startswith("@") or (path.is_file() and "," not in text):
        try:
            raw = path.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read the story list {path} ({err}); give a file with one story "
                              "per line, or a comma-separated list") from None
        if raw.lstrip().startswith("["):
            try:
                items = json.loads(raw)
            except ValueError as err:
                raise ConfigError(f"story list {path} is not a JSON list ({err})") from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ConfigError(f"story list {path} must be a JSON list of story names")
        else:
            items = [line.split("#")[0].strip() for line in raw.splitlines()]
    else:
        items = [t.strip() for t in text.split(",")]
    items = [i for i in items if i]
    if not items:
        raise ConfigError(f"no story in {text!r}; give e.g. --train-stories story1,story2 or @stories.txt")
    return tuple(items)


def add_study_args(p, *, subject_required: bool = True, model_args: bool = False) -> None:
    """The arguments every per-subject command shares: ``--data --subject --protocol
    --train-stories --roi-groups --seed --out`` (and, with ``model_args``, ``--features | --model
    --layers --mode --precision``), read back by :func:`encode_params_of` / :func:`roi_groups_of`."""
    p.add_argument("--data", required=subject_required, help="demo | ds003020:<path>")
    p.add_argument("--subject", required=subject_required, help="e.g. S1 (demo), UTS01")
    if model_args:
        p.add_argument("--features", help="lowlevel:<name> | semantic:<name>")
        p.add_argument("--model", help="hf:<id-or-dir> | bundled:whisper-tiny.en | random:<family>[-tiny] | "
                                       "ckpt:<run>")
        p.add_argument("--layers", help="with --model: comma-separated indices or names, or 'all'")
        p.add_argument("--mode", choices=("paper", "fast"),
                       help="with --model: window protocol (paper: 16 s windows every 0.1 s, last frame; "
                            "fast: every 1 s, mean of the last second's frames). Default: fast on the "
                            "demo, paper elsewhere")
        p.add_argument("--precision", choices=("fp32", "bf16"),
                       help="with --model: forward pass in fp32 (default) or under bf16 autocast (faster on "
                            "CPUs with bf16 units and on GPUs; README gives its measured effect on r)")
    p.add_argument("--protocol", choices=("project", "released"), default="project",
                   help="evaluation protocol: project (default; delay per story before the trim, "
                        "alpha by held-out r, whole test story) or released (the released code: its 24 "
                        "training stories, test from row 40, alpha by signed sqrt R^2, ceiling ddof 1, "
                        "trim, z-score, then delay)")
    p.add_argument("--train-stories", help="training stories: a,b,c or @FILE (one per line or a JSON "
                                           "list); default: the protocol's")
    p.add_argument("--roi-groups", help='JSON file {"group": ["ROI", ...]} of ROI groups to summarise '
                                        "(default: semantic = Broca, sPMv, IPS, RSC, FO; auditory = AC)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap / permutation seed")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")


def encode_params_of(args):
    """``EncodeParams`` of the :func:`add_study_args` arguments."""
    from core.encoding.params import EncodeParams

    overrides = {"seed": args.seed}
    if getattr(args, "train_stories", None):
        overrides["train_stories"] = parse_story_list(args.train_stories)
    return EncodeParams.for_protocol(args.protocol, **overrides)


def roi_groups_of(args):
    """ROI groups of ``--roi-groups`` (None: the defaults)."""
    from core.data.roi_groups import read_roi_groups

    return read_roi_groups(args.roi_groups) if getattr(args, "roi_groups", None) else None


def _cmd_encode(args) -> int:
    from core.data import load_dataset
    from core.pipelines.encode import encode

    params, groups = encode_params_of(args), roi_groups_of(args)
    group = args.subject.strip() == "all" or "," in args.subject
    if not group and (args.n_jobs is not None or args.backend != "loky" or args.scheduler):
        from core.errors import ConfigError

        raise ConfigError(f"--n-jobs, --backend and --scheduler fan out over subjects: give --subject all "
                          f"or S1,S2,… (not just {args.subject})")
    with _tqdm_progress("encode", not args.quiet) as progress:
        ds = load_dataset(args.data, progress=progress)
        source, layers = _resolve_features(args)
        if group:
            from core.pipelines.group import encode_group

            summary = encode_group(ds, args.subject, source, layers, Path(args.out), params, groups,
                                   args.n_jobs, args.backend, args.scheduler, progress)
            print(json.dumps({k: summary[k] for k in ("subjects", "features", "layers", "participants",
                                                      "regions", "mean_maps", "execution")}, indent=1))
            return 0
        summary = encode(ds, args.subject, source, layers, Path(args.out), params, groups, progress)
    prov = summary["provenance"]
    out = {k: summary[k] for k in ("subject", "features", "n_voxels", "layers")}
    out.update({k: prov[k] for k in ("protocol", "feature_mode", "train_stories", "skipped")})
    print(json.dumps(out, indent=1))
    return 0


def _cmd_tune(args) -> int:
    from core.pipelines.tune import tune

    overrides = {}
    for name in ("epochs", "seed", "targets", "micro_batch", "batch_size", "precision", "head_init",
                 "train_layers"):
        v = getattr(args, name)
        if v is not None:
            overrides[name] = v
    if args.lora:
        overrides["lora"] = True
    with _tqdm_progress("tune", not args.quiet) as progress:
        summary = tune(args.data, args.subject, args.model, Path(args.out), overrides, args.preset,
                       args.control, args.resume, progress)
    from core.tuning.trainer import is_main_process

    if is_main_process():  # under torchrun / accelerate launch: one summary, not one per process
        print(json.dumps(summary, indent=1, default=str))
    return 0


def _cmd_evaluate_run(args) -> int:
    from core.pipelines.evaluate import evaluate_run

    with _tqdm_progress("evaluate", not args.quiet) as progress:
        summary = evaluate_run(Path(args.run), args.protocol, args.metric, args.mode, progress)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def _cmd_compare(args) -> int:
    from core.pipelines.evaluate import compare_dirs

    summary = compare_dirs([Path(d) for d in args.results], Path(args.out), args.metric)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def _cmd_compare_subjects(args) -> int:
    from core.errors import ConfigError
    from core.pipelines.evaluate import compare_subjects

    pairs = []
    for item in args.pairs:
        base, sep, other = item.partition(":")
        if not sep or not base or not other:
            raise ConfigError(f"{item!r} is not BASE_DIR:OTHER_DIR (one pair of encode results per subject)")
        pairs.append((Path(base), Path(other)))
    print(json.dumps(compare_subjects(pairs, Path(args.out), args.metric, args.layer), indent=1, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="Brain-tuning Studio engine")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("datasets", help="dataset commands")
    ds_sub = ds.add_subparsers(dest="datasets_command", required=True)
    d = ds_sub.add_parser("describe", help="JSON summary of a dataset")
    d.add_argument("--data", required=True, help="demo | ds003020:<path>")
    d.set_defaults(func=_cmd_describe)

    e = sub.add_parser("encode", help="voxelwise encoding of a feature space or model layers")
    add_study_args(e, model_args=True)
    next(a for a in e._actions if "--subject" in a.option_strings).help = (
        "e.g. S1 (demo), UTS01; all or S1,S2,… encodes each subject into OUT/<subject>/ and writes "
        "OUT/group.json (per-participant table, per-ROI Wilcoxon across participants, mean map)")
    e.add_argument("--n-jobs", dest="n_jobs", type=int,
                   help="with --subject all|S1,S2: parallel fits (default 1; -1 = every core / cluster worker)")
    e.add_argument("--backend", choices=("loky", "threading", "dask", "ray"), default="loky",
                   help="joblib backend of the fan-out: loky (processes, default), threading, or a cluster: "
                        "dask / ray with --scheduler")
    e.add_argument("--scheduler", help="with --backend dask: the scheduler address, e.g. tcp://HOST:8786 "
                                       "(ray: the cluster address)")
    e.set_defaults(func=_cmd_encode)

    t = sub.add_parser("tune", help="brain-tune a speech model on a subject's fMRI (run folder + export)")
    t.add_argument("--data", required=True, help="demo | ds003020:<path>")
    t.add_argument("--subject", required=True, help="e.g. S1 (demo), UTS01")
    t.add_argument("--model", required=True, help="hf:<id-or-dir> | bundled:whisper-tiny.en | random:<family>[-tiny]")
    t.add_argument("--out", required=True, help="run folder (new or empty; an existing run with --resume)")
    t.add_argument("--preset", choices=("demo", "paper"), default="demo",
                   help="demo (head lr 1e-3, semantic-ROI targets, 3 epochs, batch 16, top 2 layers, bf16 "
                        "where native) or paper (the "
                        "paper's defaults: ceiling>0.4, 30 epochs, batch 128)")
    t.add_argument("--epochs", type=int, help="number of epochs (default: the preset's)")
    t.add_argument("--seed", type=int, help="seed (data order, head init, controls)")
    t.add_argument("--targets", help="target voxels: ceiling>0.4[@FILE.npy] | roi:NAME[,NAME] | "
                                     "top:K[:LAYER]@RESULT_DIR (default: the preset's)")
    t.add_argument("--micro-batch", dest="micro_batch", type=int, help="samples per forward pass")
    t.add_argument("--batch-size", dest="batch_size", type=int, help="effective batch (multiple of micro-batch)")
    t.add_argument("--precision", choices=("fp32", "bf16"), help="fp32 or bf16 autocast")
    t.add_argument("--train-layers", dest="train_layers", type=int,
                   help="train only the top N transformer layers (0 = every layer, the paper)")
    t.add_argument("--lora", action="store_true", help="LoRA (r 8, alpha 32, dropout 0.1 on q/k/v/out)")
    t.add_argument("--control", metavar="CONTROL",
                   help="control run: random-story | chunk-shuffle (random-fMRI: another story's or "
                        "chunk-shuffled responses) | stimulus (stimulus-tuned: the model's own "
                        "self-supervised loss on the same clips, no fMRI: wav2vec2 contrastive + diversity, "
                        "Whisper ASR of the clips' words, HuBERT masked prediction of MFCC k-means "
                        "clusters) | representation:FSPEC[#LAYER] (targets are another "
                        "feature space at the same TRs, e.g. representation:semantic:minilm = LM-tuned, "
                        "representation:bundled:whisper-base#layer_6 = BigSLM-tuned); validated by the "
                        "pipeline")
    t.add_argument("--head-init", dest="head_init", choices=("zeros", "random", "ridge"),
                   help="head initialisation: zeros (paper, default), random, or ridge (fitted on the "
                        "pretrained model's pooled features of the training samples)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out (same parameters)")
    t.set_defaults(func=_cmd_tune)

    ev = sub.add_parser("evaluate-run", help="encode a tuning run's model and its pretrained model on the "
                                             "test story and compare them (writes RUN/evaluation/)")
    ev.add_argument("run", help="a finished tuning run folder (the --out of `tune`)")
    ev.add_argument("--protocol", choices=("project", "released"), default="project")
    ev.add_argument("--metric", choices=("cc_norm", "r"), default="cc_norm")
    ev.add_argument("--mode", choices=("paper", "fast"),
                    help="layer-feature window mode of both encodings (default: fast on the demo, paper elsewhere)")
    ev.set_defaults(func=_cmd_evaluate_run)

    c = sub.add_parser("compare", help="compare encode results of one subject: the first is the baseline")
    c.add_argument("results", nargs="+", help="encode result folders: BASE OTHER [OTHER …]")
    c.add_argument("--out", required=True, help="output folder (replaced atomically)")
    c.add_argument("--metric", choices=("cc_norm", "r"), default="cc_norm")
    c.set_defaults(func=_cmd_compare)

    cs = sub.add_parser("compare-subjects", help="model B vs A across subjects: Wilcoxon over per-subject "
                                                 "region means (one BASE:OTHER pair of results per subject)")
    cs.add_argument("pairs", nargs="+", help="BASE_DIR:OTHER_DIR per subject")
    cs.add_argument("--out", required=True, help="output folder (replaced atomically)")
    cs.add_argument("--metric", choices=("cc_norm", "r"), default="cc_norm")
    cs.add_argument("--layer", default="best", help="a layer both results have, or best (default)")
    cs.set_defaults(func=_cmd_compare_subjects)
    _add_pipeline_commands(sub)
    return p


def _add_pipeline_commands(sub) -> None:
    """Subcommands contributed by pipeline modules: every ``core.pipelines.<name>`` defining
    ``add_command(subparsers)`` adds its own (the analyses), so the CLI lists each in one place."""
    import importlib
    import pkgutil

    import core.pipelines

    for info in sorted(pkgutil.iter_modules(core.pipelines.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"core.pipelines.{info.name}")
        if hasattr(module, "add_command"):
            module.add_command(sub)


def main(argv=None) -> int:
    import logging

    logger = logging.getLogger("core")  # warnings (e.g. skipped stories) as one line on this call's stderr
    for old in [h for h in logger.handlers if getattr(h, "bts_cli", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.bts_cli = True
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except StudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
