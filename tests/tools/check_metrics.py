#!/usr/bin/env python3
"""Validates a metrics exposition read on stdin with the parsers of PyPI's prometheus-client
(the reference client library), as a scraper would read it.

    check_metrics.py text          Prometheus text format 0.0.4
    check_metrics.py openmetrics   OpenMetrics 1.0.0 (the strict parser: `# EOF`, names, order)

Beyond parsing, every family that has samples must have a type other than unknown/untyped and
a HELP text: a 0.0.4 parser that cannot tie a sample to its TYPE and HELP lines (a counter
whose TYPE names `x` while its sample is `x_total`) files it under an untyped family of its
own. Prints one line per family (`name type samples`) and exits 1 with the reason on failure.
"""
import sys


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in ("text", "openmetrics"):
        print(__doc__, file=sys.stderr)
        return 2
    data = sys.stdin.read()
    if sys.argv[1] == "text":
        from prometheus_client.parser import text_string_to_metric_families
    else:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    try:
        families = list(text_string_to_metric_families(data))
    except Exception as e:  # the parsers raise ValueError (and others) on invalid input
        print(f"parse error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    seen = set()
    problems = []
    for f in families:
        if f.name in seen:
            problems.append(f"family {f.name} appears twice (split by other lines)")
        seen.add(f.name)
        if not f.samples:
            continue
        if f.type in ("unknown", "untyped"):
            problems.append(f"family {f.name} has samples but no type ({f.samples[0].name})")
        if not f.documentation:
            problems.append(f"family {f.name} has samples but no HELP")
        print(f"{f.name} {f.type} {len(f.samples)}")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
