"""Cost of hostile but small image files: peak RSS growth and time of one load, each in a fresh process.

    python benchmarks/bench_image_input.py [--baseline SRC_DIR]

Cases: a 60-megapixel PNG (gray and RGB, ~70-190 KB), a 24-megapixel RGB PNG (legal), a deflated DICOM
that declares 512 x 512 but inflates to 400 MB, and one that declares 20,000 x 20,000. With
``--baseline /work/baseline/src`` the same cases run against another checkout, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from crrg.image import load_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    image = load_image(data, name=sys.argv[2])
    outcome = f"loaded {image.shape[1]}x{image.shape[0]}"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[len(sys.argv[2]) + 2:][:60]}"
print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "outcome": outcome}))
"""


def make_cases(folder: Path) -> dict[str, Path]:
    import numpy as np  # noqa: F401
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from tests.image.conftest import deflated_dicom

    cases = {}
    for name, size, mode in (("png_60mp_gray", (10000, 6000), "L"), ("png_60mp_rgb", (10000, 6000), "RGB"),
                             ("png_24mp_rgb", (4800, 5000), "RGB")):
        path = folder / f"{name}.png"
        Image.new(mode, size, (128,) * len(mode)).save(path, optimize=True)
        cases[name] = path
    for name, rows, cols, nbytes in (("dicom_deflated_400mb", 512, 512, 400 << 20),
                                     ("dicom_deflated_20000px", 20000, 20000, None)):
        path = folder / f"{name}.dcm"
        path.write_bytes(deflated_dicom(rows, cols, nbytes))
        cases[name] = path
    return cases


def run(path: Path, src: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), path.name, str(src)], capture_output=True, text=True,
                         env=env, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="src folder of another checkout to compare with")
    args = parser.parse_args()
    rows, payload = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_cases(Path(tmp)).items():
            size_kb = path.stat().st_size / 1e3
            for label, src in (("baseline", args.baseline), ("this", ROOT / "src")):
                if src is None:
                    continue
                result = run(path, src)
                payload[f"{name}/{label}"] = {"kb": size_kb, **result}
                rows.append([name, f"{size_kb:.0f}", label, f"{result['rss_mb']:.0f}", f"{result['seconds']:.2f}",
                             result["outcome"]])
    table = print_table("One load of a small hostile image file (fresh process each)",
                        ["case", "file KB", "code", "peak RSS +MB", "seconds", "outcome"], rows)
    save_results("image_input", payload, table + "\n\nCommand: `python benchmarks/bench_image_input.py"
                 + (f" --baseline {args.baseline}`" if args.baseline else "`"))


if __name__ == "__main__":
    main()
