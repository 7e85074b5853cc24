"""jaxbench: reproducible, vmapped simulation sweeps for theory of overparameterized ReLU networks."""

from jaxbench import compat  # noqa: F401  (first: installs the CPU threefry lowering, see compat)
from jaxbench import data, mlp, train  # noqa: F401

__version__ = "0.1.0"
