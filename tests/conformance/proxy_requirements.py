"""Print the requirements of a LiteLLM wheel's `proxy` extra, one per line, for releases whose `litellm[proxy]`
cannot be installed from the registry: without `litellm-proxy` (required, but not published; the proxy's code is in
the litellm wheel itself), and with LiteLLM's own companion packages unpinned (their exact releases may be missing).

    python proxy_requirements.py litellm-1.110.2-....whl
"""

from __future__ import annotations

import re
import sys
import zipfile


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    for line in text.splitlines():
        m = re.match(r"Requires-Dist: (.+?) ; (.*)$", line)
        if not m or not re.search(r"extra == ['\"]proxy['\"]", m.group(2)):
            continue
        requirement, marker = m.group(1), re.sub(r"\s*(and )?extra == ['\"]proxy['\"]", "", m.group(2)).strip()
        name = re.split(r"[=<>!~ ;\[]", requirement, maxsplit=1)[0].strip()
        if name == "litellm-proxy":
            continue
        if name in ("litellm-proxy-extras", "litellm-enterprise"):
            requirement = name
        print(f"{requirement}; {marker}" if marker else requirement)


if __name__ == "__main__":
    main(sys.argv[1])
