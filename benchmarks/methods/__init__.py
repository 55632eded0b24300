"""The gradient-free methods (random features, the logistic control); the backprop half of the
methods layer is the top-level ``baselines`` package. Imports only the core and the projector.
"""
