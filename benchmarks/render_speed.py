"""How long drawing the model's box on an image takes (``ivt_core.render.render_box``), per style and box size.

    python benchmarks/render_speed.py [--size 640x480] [--repeat 300] [--out build/bench/render_speed.json]

The loop draws the latest box on the scene before every refinement step (twice per sample at T=2), on the CPU,
between two GPU steps: this says what that costs. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from PIL import Image

    from ivt_core.boxes import Box
    from ivt_core.render import RENDER_STYLES, render_box

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--out", default="build/bench/render_speed.json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    scene = Image.effect_noise((width, height), 40).convert("RGB")
    boxes = {"small (1/16 of the image)": Box(width * 0.3, height * 0.3, width * 0.55, height * 0.55),
             "quarter": Box(width * 0.2, height * 0.2, width * 0.7, height * 0.7),
             "whole image": Box(2, 2, width - 2, height - 2),
             "none (an unparsable answer)": None}
    rows = []
    for style_name, style in RENDER_STYLES.items():
        for box_name, box in boxes.items():
            render_box(scene, box, style)
            start = time.perf_counter()
            for _ in range(args.repeat):
                render_box(scene, box, style)
            elapsed = time.perf_counter() - start
            rows.append({"style": style_name, "box": box_name, "ms": elapsed * 1000 / args.repeat})
    print(f"render_box on {width}x{height}, {args.repeat} repeats, {platform.processor() or platform.machine()}")
    print(f"{'style':<10}{'box':<28}{'ms':>8}")
    for row in rows:
        print(f"{row['style']:<10}{row['box']:<28}{row['ms']:>8.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"size": [width, height], "repeat": args.repeat, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
