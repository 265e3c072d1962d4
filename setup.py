"""Package layout (everything else is in pyproject.toml).

Every importable package lives under the ``movierec`` namespace. The folders the design
names keep their places and are mapped into it: ``services/`` is ``movierec.services``,
``gateway/`` is ``movierec.apps.gateway`` and ``web/`` is ``movierec.apps.web``, so no
package called ``services``, ``gateway`` or ``web`` lands in site-packages.
"""

from setuptools import find_packages, setup

MAPPED = {"movierec.services": "services", "movierec.apps.gateway": "gateway",
          "movierec.apps.web": "web"}

packages = find_packages(include=["movierec", "movierec.*"])
for name, folder in MAPPED.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]

setup(packages=sorted(packages), package_dir={"movierec": "movierec", **MAPPED})
