"""Convert a pixel checkpoint of config version 1 into version 2: ``python scripts/convert_checkpoint.py OLD NEW``
(NEW may be OLD: the folder is rewritten in place). See policies/pixel/convert.py."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from policies.pixel.convert import ConvertError, convert


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    try:
        if src.resolve() == dst.resolve():
            with tempfile.TemporaryDirectory(dir=src.parent) as tmp:
                convert(src, Path(tmp) / "new")
                for f in (Path(tmp) / "new").iterdir():
                    f.replace(src / f.name)
        else:
            convert(src, dst)
    except ConvertError as e:
        print(f"convert_checkpoint: {e}", file=sys.stderr)
        return 2
    print(f"{src} -> {dst}: config_version 2")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
