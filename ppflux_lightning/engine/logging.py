"""Training logs: VisualDL scalars and image grids on rank 0, plus a plain log line; other ranks stay silent."""

import logging as pylogging

import numpy as np

logger = pylogging.getLogger("ppflux_lightning.train")


class TrainLogger:
    """`scalars(step, {name: float})`, `images(step, tag, [HWC uint8])`; a no-op off rank 0 or without VisualDL."""

    def __init__(self, log_dir, enabled=True):
        self.writer = None
        if enabled:
            from visualdl import LogWriter

            self.writer = LogWriter(logdir=log_dir)

    def scalars(self, step, values):
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(tag=f"train/{name}", value=float(value), step=step)
        logger.info("step %d: %s", step, ", ".join(f"{k}={float(v):.5g}" for k, v in values.items()))

    def images(self, step, tag, images):
        if self.writer is None or not images:
            return
        self.writer.add_image(tag=tag, img=image_grid(images), step=step, dataformats="HWC")

    def close(self):
        if self.writer is not None:
            self.writer.close()


def image_grid(images, columns=None):
    """Tile equally sized HWC uint8 images into one grid (row-major)."""
    images = [np.asarray(im) for im in images]
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    rows = -(-len(images) // columns)
    h, w, c = images[0].shape
    grid = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for k, im in enumerate(images):
        r, col = divmod(k, columns)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = im
    return grid
