"""The `tensorforge` command line: `compile` (model -> artifacts), `inspect` (summarize a
model file), `opt` (run passes over .tfir, like mlir-opt), `passes` (list passes) and
`generate` (tokens from a `convert_lm` artifact).

Every error a user can cause is printed as one message (with file:line:col or node, scope and
loc) and exits 1; no traceback reaches the terminal unless TENSORFORGE_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Sequence

from ..ir.errors import TensorforgeError
from ..ir.text import parse_module, print_module
from ..ir.verify import verify_module
from .files import check_output_path, read_text, write_text_atomic
from ..passes import (PassContext, PassManager, load_entry_point_plugins, load_pass_plugin,
                      registered_passes)
from ..passes.plugins import PLUGINS_ENV, installed_plugins, requested_plugins

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3


def read_source(path: str) -> tuple[str, str]:
    """(text, display name) of a file, or of stdin for `-`."""
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    return read_text(path), path


def load_plugins(args: argparse.Namespace) -> None:
    """The plugins a command asks for: installed entry points only with --plugins (or
    TENSORFORGE_PLUGINS), then each --load-pass-plugin file."""
    load_entry_point_plugins(requested_plugins(args.plugins))
    for f in args.load_pass_plugin:
        load_pass_plugin(f)


def cmd_opt(args: argparse.Namespace) -> int:
    to_file = args.output is not None and args.output != "-"
    if to_file:
        check_output_path(args.output)      # before any work
    load_plugins(args)
    pm = PassManager.parse(args.passes or "")
    text, name = read_source(args.input)
    module = parse_module(text, name)
    verify_module(module)
    ctx = PassContext(print_ir_after=set(args.print_ir_after), verify_each=args.verify_each,
                      time_passes=args.time_passes, ir_stream=sys.stderr)
    pm.run(module, ctx)
    if not args.verify_each:
        verify_module(module)  # the result is always checked once
    out = print_module(module)
    if to_file:
        write_text_atomic(args.output, out)
    else:
        sys.stdout.write(out)
    if args.time_passes:
        sys.stderr.write(ctx.timing_report() + "\n")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from .convert import convert

    load_plugins(args)
    ctx = PassContext(print_ir_after=set(args.print_ir_after), verify_each=args.verify_each,
                      time_passes=args.time_passes, ir_stream=sys.stderr)
    targets = [t.strip() for t in args.target.split(",")]
    quantization, data = _quantization_args(args)
    result = convert(args.source, target=targets, output=args.output, verify=args.verify,
                     passes=args.passes, fp16=args.fp16, tfjs_quantize=args.tfjs_quantize,
                     tfjs_quantize_globs=args.tfjs_quantize_globs, safe_mode=not args.unsafe,
                     pass_context=ctx, quantization=quantization, calibration_data=data,
                     verify_inputs=args.verify_inputs, custom_objects=args.custom_objects,
                     **({} if args.min_sqnr is None else {"min_sqnr_db": args.min_sqnr}),
                     input_shapes=parse_input_shapes(args.input_shape))
    for target, path in result.paths.items():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() \
            else path.stat().st_size
        print(f"wrote {target}: {path} ({size:,} bytes)")
    if args.time_passes:
        sys.stderr.write(ctx.timing_report() + "\n")
    for note in result.notes:
        print(f"note: {note}")
    if result.verification is not None:
        print(result.verification.table())
        if not result.verification.ok:
            print("tensorforge: error: verification failed: an artifact disagrees with the "
                  "source beyond tolerance (the artifact was written for inspection)",
                  file=sys.stderr)
            return EXIT_USER_ERROR
    return 0


def parse_input_shapes(texts: Sequence[str]) -> dict[str, list[int | None]] | None:
    """`["token_ids:1,128", "mask:1,?"]` -> {name: dims} (`?` or -1: None, the model's own size);
    every malformed entry is reported at once."""
    shapes, problems = {}, []
    for text in texts:
        name, sep, dims = text.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [None if d.strip() in ("?", "-1") else int(d) for d in dims.split(",")]
        except ValueError:
            problems.append(f"  --input-shape {text!r}: expected NAME:D0,D1,... (e.g. "
                            f"token_ids:1,128; '?' leaves a dim as the model has it)")
    if problems:
        raise TensorforgeError("bad --input-shape\n" + "\n".join(problems))
    return shapes or None


def _quantization_args(args: argparse.Namespace):
    """(quantization for convert, calibration data path) from --quantize/--quant-config/
    --calibration-data. The .npz is read against the model's inputs by the driver."""
    from ..passes.quantize.quantize_pass import read_config

    if args.quant_config and not args.quantize:
        cfg = read_config(args.quant_config)
    elif args.quant_config:
        cfg = read_config(args.quant_config)
        if cfg.scheme.name != args.quantize:
            raise TensorforgeError(f"--quantize {args.quantize} disagrees with the scheme "
                                   f"{cfg.scheme.name!r} in {args.quant_config}")
    else:
        cfg = args.quantize
    if args.calibration_data and cfg is None:
        raise TensorforgeError("--calibration-data needs --quantize SCHEME (or --quant-config)")
    if args.calibration_data:
        from ..passes.quantize.calibrate import read_npz

        read_npz(args.calibration_data)     # a bad file fails before the model is loaded
    return cfg, args.calibration_data


def cmd_quant_report(args: argparse.Namespace) -> int:
    from .convert import optimize
    from ..passes.quantize.calibrate import load_npz_samples
    from .quant_report import write_report
    from .sources import load_source
    from ..backends.tf_probe import tf_runner

    check_output_path(args.output, directory=True)   # before any work
    quantization, _ = _quantization_args(args)
    source = load_source(args.source, safe_mode=not args.unsafe,
                         custom_objects=args.custom_objects)
    samples = load_npz_samples(args.calibration_data, source.module)
    from .quantize import as_config_map, check_calibration_data

    as_config_map(quantization)
    check_calibration_data(source.module, samples)
    module = optimize(source.module, None)
    path = write_report(module, quantization, samples, args.output, runner=tf_runner)
    print(f"wrote {path} and {path.parent / 'sqnr.png'}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .summary import summarize

    print(summarize(args.file).render())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generation import GenerationError, generate

    try:
        prompt = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
    except ValueError:
        raise GenerationError(f"--prompt-ids {args.prompt_ids!r}: comma-separated token ids "
                              f"expected, e.g. 1,2,3") from None
    if not os.path.exists(args.artifact):
        raise GenerationError(f"{args.artifact}: no such artifact")
    tokens = generate(args.artifact, prompt, args.max_new_tokens, sampler=args.sampler,
                      seed=args.seed, temperature=args.temperature, top_k=args.top_k)
    print(",".join(str(int(t)) for t in tokens))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    load_plugins(args)
    for name, cls in registered_passes().items():
        print(f"{name:<22} {cls.summary()}")
        for key, opt in cls.options.items():
            default = opt.default
            shown = ("true" if default else "false") if isinstance(default, bool) else default
            setting = f"{key}={shown}"
            choices = opt.valid_choices()
            kind = opt.type.__name__ + (f": {'|'.join(map(str, choices))}" if choices else "")
            print(f"    {setting:<26} ({kind}) {opt.doc}")
    plugins = installed_plugins()      # listed, not imported
    if plugins:
        print(f"\ninstalled pass plugins (imported only with --plugins NAME or all, or "
              f"{PLUGINS_ENV}):")
        for ep in plugins:
            dist = getattr(ep, "dist", None)
            origin = f"  [{dist.name} {dist.version}]" if dist is not None else ""
            print(f"  {ep.name:<20} {ep.value}{origin}")
    return 0


def _add_custom_objects_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--custom-objects", metavar="FILE.py", action="append", default=None,
                        help="a Python file defining (or registering with "
                             "@keras.saving.register_keras_serializable) the custom layers "
                             "a .keras file uses; imported before loading (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = argparse.ArgumentParser(
        prog="tensorforge", description="A compiler for trained models.")
    parser.add_argument("--version", action="version", version=f"tensorforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    opt = sub.add_parser("opt", help="run a pass pipeline over a .tfir file and print the IR",
                         description="Parses FILE (.tfir, or - for stdin), verifies it, runs "
                                     "the pipeline and prints the resulting IR to stdout.")
    opt.add_argument("input", metavar="FILE", help=".tfir file, or - for stdin")
    opt.add_argument("--passes", metavar="PIPELINE", default="",
                     help="e.g. 'canonicalize,cse' or 'canonicalize{fold=false}'")
    opt.add_argument("-o", "--output", metavar="OUT", help="write the IR here instead of stdout")
    _add_pass_flags(opt)
    opt.set_defaults(func=cmd_opt)

    comp = sub.add_parser("compile", help="compile a model to deployment artifacts",
                          description="Compiles SRC (a .keras file, a SavedModel directory, a "
                                      ".tfir file, or path/to/file.py:factory where factory() "
                                      "returns a Keras model or a tensorforge.JaxModel) to the "
                                      "target formats.")
    comp.add_argument("source", metavar="SRC")
    comp.add_argument("--target", default="tflite",
                      help="tflite (default), savedmodel, tfjs, a comma-separated list, or all")
    comp.add_argument("-o", "--output", required=True, metavar="OUT",
                      help="output file (e.g. model.tflite) or directory")
    comp.add_argument("--verify", action="store_true",
                      help="run source, IR interpreter and artifact on the same inputs (random "
                           "values the model accepts) and print their errors")
    comp.add_argument("--verify-inputs", metavar="FILE.npz",
                      help="verify on these inputs instead (one array per model input, named "
                           "after it); implies --verify")
    comp.add_argument("--fp16", action="store_true",
                      help="TFLite: store float weights as float16")
    comp.add_argument("--tfjs-quantize", choices=("uint8", "uint16", "float16"),
                      help="TF.js: compress float weights (affine uint8/uint16, or float16)")
    comp.add_argument("--tfjs-quantize-globs", nargs="+", metavar="GLOB",
                      help="TF.js: compress only weights whose names match these globs")
    comp.add_argument("--passes", metavar="PIPELINE", default=None,
                      help="pass pipeline (default: canonicalize)")
    comp.add_argument("--unsafe", action="store_true",
                      help="load .keras files with safe_mode=False (runs code in the file)")
    _add_custom_objects_flag(comp)
    comp.add_argument("--input-shape", metavar="NAME:D0,D1,...", action="append", default=[],
                      help="fix a Keras input's shape for a static artifact, e.g. "
                           "token_ids:1,128 ('?' leaves a dim as the model has it; repeatable)")
    _add_quant_flags(comp)
    comp.add_argument("--min-sqnr", metavar="DB", type=float, default=None,
                      help="with --quantize and --verify: the least SQNR (dB) each quantized "
                           "output must keep against the float model (default 5)")
    _add_pass_flags(comp)
    comp.set_defaults(func=cmd_compile)

    rep = sub.add_parser("quant-report", help="per-layer quantization error report",
                         description="Quantizes SRC with a scheme (and optional config), runs "
                                     "the float and the quantized model on the calibration "
                                     "data and writes OUT/report.md (per-layer SQNR, nodes "
                                     "left float) and OUT/sqnr.png.")
    rep.add_argument("source", metavar="SRC")
    rep.add_argument("-o", "--output", required=True, metavar="DIR")
    rep.add_argument("--unsafe", action="store_true",
                     help="load .keras files with safe_mode=False (runs code in the file)")
    _add_custom_objects_flag(rep)
    _add_quant_flags(rep, data_required=True)
    rep.set_defaults(func=cmd_quant_report)

    insp = sub.add_parser("inspect", help="summarize a .tflite, .keras, SavedModel or .tfir")
    insp.add_argument("file", metavar="FILE")
    insp.set_defaults(func=cmd_inspect)

    gen = sub.add_parser("generate", help="generate tokens with a convert_lm artifact",
                         description="Runs the prefill and decode signatures of ARTIFACT (written "
                                     "by tensorforge.convert_lm) after the prompt and prints "
                                     "the new token ids, comma-separated.")
    gen.add_argument("artifact", metavar="ARTIFACT")
    gen.add_argument("--prompt-ids", required=True, metavar="IDS",
                     help="the prompt's token ids, comma-separated (e.g. 1,2,3)")
    gen.add_argument("-n", "--max-new-tokens", type=int, default=32, metavar="N")
    gen.add_argument("--sampler", choices=("greedy", "top_k"), default="greedy")
    gen.add_argument("--top-k", type=int, default=40, metavar="K")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=cmd_generate)

    passes = sub.add_parser("passes", help="list registered passes and their options",
                            description="Lists the built-in passes (and those of loaded "
                                        "plugins) with their options, then the installed "
                                        "plugin packages, which are not imported unless "
                                        "asked for with --plugins.")
    _add_plugin_flags(passes)
    passes.set_defaults(func=cmd_passes)
    return parser


def _add_quant_flags(p: argparse.ArgumentParser, data_required: bool = False) -> None:
    from ..passes.quantize import schemes

    p.add_argument("--quantize", metavar="SCHEME",
                   help=f"quantization scheme: {', '.join(schemes.names())}")
    p.add_argument("--quant-config", metavar="FILE",
                   help="per-layer/op/tensor configuration (JSON from "
                        "QuantizationConfigurationMap.to_json)")
    p.add_argument("--calibration-data", metavar="FILE.npz", required=data_required,
                   help="representative samples: one array per model input (named after it), "
                        "one row per sample")


def _add_pass_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--print-ir-after", metavar="NAME", action="append", default=[],
                   help="print the IR to stderr after pass NAME, or after every pass with 'all'")
    p.add_argument("--verify-each", action="store_true", help="run the verifier after each pass")
    p.add_argument("--time-passes", action="store_true", help="print a timing table to stderr")
    _add_plugin_flags(p)


def _add_plugin_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--load-pass-plugin", metavar="FILE", action="append", default=[],
                   help="load passes from a Python file (repeatable)")
    p.add_argument("--plugins", metavar="NAMES", default=None,
                   help=f"import installed plugin packages (entry points of "
                        f"'tensorforge.passes'): all, none, or names, comma-separated "
                        f"(default: ${PLUGINS_ENV}, else none)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tensorforge` console script; returns the exit code."""
    # TensorFlow's C++ start-up chatter is noise on a compiler's terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TensorforgeError as e:
        print(f"tensorforge: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("tensorforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug of ours: say so plainly, no traceback unless asked
        if os.environ.get("TENSORFORGE_DEBUG"):
            traceback.print_exc()
        print(f"tensorforge: internal error: {type(e).__name__}: {e}\n"
              f"(this is a bug in tensorforge; rerun with TENSORFORGE_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
