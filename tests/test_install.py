"""The install stays small on a CPU machine: torch is pinned or capped, so pip never reaches for a
newer (CUDA, multi-GB) release."""

import tomllib

from packaging.requirements import Requirement

from .conftest import REPO


def test_torch_is_pinned_or_capped():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [Requirement(d) for d in deps if Requirement(d).name == "torch"]
    assert torch.specifier.contains("2.13.0")
    assert not torch.specifier.contains("2.14.0") and not torch.specifier.contains("3.0.0")
