"""jaxbench: reproducible, vmapped simulation sweeps for theory of overparameterized ReLU networks."""

from jaxbench import data, mlp, train  # noqa: F401

__version__ = "0.1.0"
