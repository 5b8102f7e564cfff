"""Print the package index pip uses here, for Poetry's pypi-mirror plugin.

The URL is looked up at run time (pip's configuration, else pip's default index) so that no
registry host is ever written into the repository.
"""

import os
import subprocess
import sys


def index_url() -> str:
    url = os.environ.get("PIP_INDEX_URL", "").strip()
    if url:
        return url
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except OSError:
        pass
    from pip._internal.models.index import PyPI

    return PyPI.simple_url


if __name__ == "__main__":
    print(index_url())
