"""The harness: the method registry and plugins, cells and their keys, the runner and executors,
results files, suites, estimates. Imports the methods, the core and the projector.
"""
