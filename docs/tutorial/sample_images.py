"""Sample images for the beginner tutorial: simple shapes on a gradient,
drawn with OpenCV, so the tutorial needs no download.

    python docs/tutorial/sample_images.py OUT_DIR [--count N] [--first K]

writes OUT_DIR/sample-K.png ... sample-(K+N-1).png (the same names give the
same pictures)."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import cv2
import numpy as np


def draw(index: int, size: int = 240) -> np.ndarray:
    rng = random.Random(index)
    ramp = np.linspace(40, 200, size, dtype=np.uint8)
    img = np.dstack(
        [
            np.tile(ramp, (size, 1)),
            np.tile(ramp[:, None], (1, size)),
            np.full((size, size), 90, np.uint8),
        ]
    )
    img = np.ascontiguousarray(img)
    for _ in range(3 + index % 4):
        color = tuple(rng.randrange(256) for _ in range(3))
        x, y = rng.randrange(size), rng.randrange(size)
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), rng.randrange(15, 60), color, -1)
        else:
            cv2.rectangle(
                img, (x, y), (x + rng.randrange(20, 90), y + rng.randrange(20, 90)), color, -1
            )
    cv2.putText(img, str(index), (10, size - 15), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--first", type=int, default=1)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.first, args.first + args.count):
        cv2.imwrite(str(args.out / f"sample-{i}.png"), draw(i))


if __name__ == "__main__":
    main()
