"""The routing policies, one module each: a module `<name>.py` here declares the policy `<name>`
(hyphens for its underscores) as `POLICY = gateway.contract.policy.PolicySpec(...)`.

This package's own code only lists the modules, importing none: gateway.contract.config checks a setting's
policy name against the list, and the policy modules import gateway.contract.config for the settings' type.
gateway.contract.router imports them all into its POLICIES registry.
"""

from __future__ import annotations

import pkgutil
from functools import cache


@cache
def policy_modules() -> dict[str, str]:
    """Each policy's name and the module that declares it, sorted by name (listed once: the
    package's files do not change under a running process)."""
    found = (info.name for info in pkgutil.iter_modules(__path__) if not info.ispkg)
    return {module.replace("_", "-"): f"{__name__}.{module}" for module in sorted(found)}
