"""gradfree's harness: data, backbones, timing, methods registry, runner, command line, reports."""
