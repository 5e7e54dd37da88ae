"""Layers with parameters, train/eval modes and initialisation."""
from .module import Module, Parameter, Sequential
