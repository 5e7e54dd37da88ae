"""Differentiable operations, each a Function with a hand-written backward on raw arrays."""
