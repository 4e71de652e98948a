"""CLIP score: 100 x cosine similarity of CLIP image and text embeddings, clipped at 0 (as torchmetrics defines it).

Note the scale: the seed article reports CLIP similarity as a fraction (0.3294); this module reports x100 (32.94).
"""

import os

import numpy as np
import paddle
import paddle.nn.functional as F

from .features import to_nchw

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing constants
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(images, size, mean=CLIP_MEAN, std=CLIP_STD):
    """Images `[N, H, W, 3]` -> normalised `[N, 3, size, size]`: bicubic resize of the short side, centre crop."""
    x = to_nchw(images)
    height, width = x.shape[2], x.shape[3]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=[new_h, new_w], mode="bicubic", align_corners=False).clip(0, 1)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    return (x - paddle.to_tensor(mean).reshape([1, 3, 1, 1])) / paddle.to_tensor(std).reshape([1, 3, 1, 1])


def cosine_scores(image_embeddings, text_embeddings):
    """Row-wise max(100 * cos(image_i, text_i), 0) of two `[N, D]` arrays."""
    a = np.asarray(image_embeddings, np.float64)
    b = np.asarray(text_embeddings, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embedding shapes differ or are not [N, D]: {a.shape} vs {b.shape}")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.maximum(100.0 * cos, 0.0)


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
        """Per-pair CLIP scores, numpy `[N]`."""
        return cosine_scores(*self.embeddings(images, prompts))

    def __call__(self, images, prompts):
        """Mean CLIP score over the pairs."""
        return float(self.scores(images, prompts).mean())
