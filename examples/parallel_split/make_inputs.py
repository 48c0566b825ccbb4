"""Write the small deterministic inputs of the parallel_split example into ``inputs/``."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path


def main(out: Path, n_images: int = 4, size: int = 8) -> None:
    rng = random.Random(2020)
    out.mkdir(parents=True, exist_ok=True)
    images = [
        {
            "name": f"image{i + 1}",
            "exptime": 100.0,
            "pixels": [[round(1000 + rng.gauss(0, 10), 2) for _ in range(size)] for _ in range(size)],
        }
        for i in range(n_images)
    ]
    dark = {
        "exptime": 100.0,
        "pixels": [[round(abs(rng.gauss(2, 2)), 2) for _ in range(size)] for _ in range(size)],
    }
    flat = {"pixels": [[round(rng.uniform(0.05, 1.1), 3) for _ in range(size)] for _ in range(size)]}
    params = {"hot_dark_threshold": 5.0, "dead_flat_threshold": 0.1}
    for name, data in [
        ("images", {"images": images}),
        ("master_dark", dark),
        ("master_flat", flat),
        ("control_params", params),
    ]:
        (out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "inputs")
