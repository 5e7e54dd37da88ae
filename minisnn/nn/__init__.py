"""Layers with parameters, train/eval modes and initialisation."""
from .module import Module, Parameter, Sequential
from .norm import BatchNorm, TdBN
from .layers import AvgPool2d, Conv2d, Flatten, GlobalAvgPool2d, Linear
from .neuron import LIF
