"""`python -m tensorforge.tools.fuzz [--n 1000] [--campaigns parser,cli] [--seed 0]`: runs the
fuzzing campaigns and prints inputs per campaign and the crash signatures; exits 1 when any
input crashed, hung, left a file behind or failed without naming its input."""

from __future__ import annotations

import argparse
import os
import sys

from . import CAMPAIGNS, get_campaign, report, run_campaign


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    p = argparse.ArgumentParser(prog="python -m tensorforge.tools.fuzz",
                                description="Fuzz every reader of user input.")
    p.add_argument("--n", type=int, default=1000, help="inputs per campaign (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--campaigns", default=",".join(CAMPAIGNS),
                   help=f"comma-separated subset of: {', '.join(CAMPAIGNS)}")
    args = p.parse_args(argv)
    results = []
    for name in [c.strip() for c in args.campaigns.split(",") if c.strip()]:
        campaign = get_campaign(name)
        print(f"campaign {name} ...", file=sys.stderr, flush=True)
        results.append(run_campaign(campaign, args.n, args.seed,
                                    progress=lambda m: print(m, file=sys.stderr, flush=True)))
        print(f"  {results[-1].inputs} inputs, {results[-1].failures} failures, "
              f"{results[-1].seconds:.1f}s", file=sys.stderr, flush=True)
    print(report(results))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
