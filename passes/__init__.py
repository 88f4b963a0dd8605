"""Pass infrastructure (registry, pipelines, pass manager, pattern rewriting, plugins) and
the built-in passes. Importing this package registers the built-ins."""

from . import canonicalize, control, dtypes, quantize, recurrent, shard  # noqa: F401  (registers passes)
from .base import Option, Pass, PipelineError, get_pass, register_pass, registered_passes
from .manager import PassContext, PassManager, PassTiming
from .pipeline import parse_pipeline, print_pipeline
from .plugins import PluginError, load_entry_point_plugins, load_pass_plugin
from .rewrite import RewritePattern, Rewriter, apply_patterns_greedily

__all__ = ["Option", "Pass", "PipelineError", "get_pass", "register_pass", "registered_passes",
           "PassContext", "PassManager", "PassTiming", "parse_pipeline", "print_pipeline",
           "PluginError", "load_entry_point_plugins", "load_pass_plugin", "RewritePattern",
           "Rewriter", "apply_patterns_greedily"]
