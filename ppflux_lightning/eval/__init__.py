"""Evaluation: FID (fid, features), CLIP score (clip_score), toy prompt adherence (adherence), PSNR/SSIM
(image_metrics), the generate-and-score driver (evaluate) and the human evaluation kit (human_eval).

Submodules are imported on demand, so `adherence`, `fid` and `image_metrics` stay usable without loading paddlenlp.
"""
