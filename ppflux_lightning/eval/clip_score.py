"""CLIP score as torchmetrics' `CLIPScore` computes it: max(mean over pairs of 100 x cos(image, text), 0).

The clip at 0 applies to the mean, not to each pair (torchmetrics' `compute`); images are prepared the way
transformers' `CLIPImageProcessor` does for OpenAI CLIP. Note the scale: the seed article reports CLIP similarity as
a fraction (0.3294); this module reports x100 (32.94).
"""

import os

import numpy as np
import paddle
from PIL import Image

from .image_io import to_uint8

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing constants
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(images, size, mean=CLIP_MEAN, std=CLIP_STD):
    """Images `[N, H, W, 3]` -> normalised `[N, 3, size, size]`, as `CLIPImageProcessor` prepares them: uint8 pixels
    (floats in [0, 1] rounded), PIL bicubic resize of the short side to `size` (the long side scaled and truncated
    to an integer), centre crop, scale to [0, 1], OpenAI mean/std."""
    crops = []
    for image in to_uint8(images):
        height, width = image.shape[:2]
        scaled = int(size * max(height, width) / min(height, width))
        new_h, new_w = (scaled, size) if width <= height else (size, scaled)
        if (new_h, new_w) != (height, width):
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
        top, left = (new_h - size) // 2, (new_w - size) // 2
        crops.append(image[top:top + size, left:left + size])
    x = np.stack(crops).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return paddle.to_tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def cosine_scores(image_embeddings, text_embeddings):
    """Row-wise 100 * cos(image_i, text_i) of two `[N, D]` arrays (not clipped: the clip applies to the mean)."""
    a = np.asarray(image_embeddings, np.float64)
    b = np.asarray(text_embeddings, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embedding shapes differ or are not [N, D]: {a.shape} vs {b.shape}")
    return 100.0 * (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def clip_score_of(scores):
    """The CLIP score of per-pair scores: their mean, clipped at 0 (torchmetrics' `CLIPScore.compute`)."""
    return max(float(np.mean(scores)), 0.0)


class CLIPScorer:
    """Scores image/prompt pairs with a paddlenlp `CLIPModel`.

    `tokenize(prompts) -> int64 [N, L]` ids; `from_pretrained` wires paddlenlp's CLIPTokenizer (padding to the
    model's context length, truncating longer prompts).
    """

    def __init__(self, model, tokenize, batch_size=32):
        self.model = model
        self.model.eval()
        self.tokenize = tokenize
        self.batch_size = batch_size
        self.image_size = model.config.vision_config.image_size

    @classmethod
    def from_pretrained(cls, folder, batch_size=32):
        """Load a local paddlenlp CLIP folder (weights, config, vocab.json, merges.txt); nothing is downloaded."""
        from paddlenlp.transformers import CLIPModel, CLIPTokenizer

        if not os.path.isdir(folder):
            raise FileNotFoundError(f"CLIP model folder not found: {folder}")
        model = CLIPModel.from_pretrained(folder)
        tokenizer = CLIPTokenizer.from_pretrained(folder)
        max_length = model.config.text_config.max_position_embeddings

        def tokenize(prompts):
            ids = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True)["input_ids"]
            return np.asarray(ids, dtype=np.int64)

        return cls(model, tokenize, batch_size)

    @paddle.no_grad()
    def embeddings(self, images, prompts):
        """Image and text embeddings (numpy `[N, D]` each) of paired images and prompts."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if len(prompts) == 0:
            raise ValueError("no images to score")
        image_out, text_out = [], []
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            pixels = clip_preprocess(images[start:stop], self.image_size)
            image_out.append(self.model.get_image_features(pixel_values=pixels).numpy())
            ids = paddle.to_tensor(self.tokenize(prompts[start:stop]))
            text_out.append(self.model.get_text_features(input_ids=ids).numpy())
        return np.concatenate(image_out), np.concatenate(text_out)

    def scores(self, images, prompts):
        """Per-pair 100 x cosine, numpy `[N]`."""
        return cosine_scores(*self.embeddings(images, prompts))

    def __call__(self, images, prompts):
        """The CLIP score of the pairs: mean of `scores`, clipped at 0."""
        return clip_score_of(self.scores(images, prompts))
