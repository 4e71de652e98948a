"""Training-free acceleration: cache policies that skip or extrapolate transformer blocks across denoising steps.

`pipe.enable_cache(CacheConfig("firstblock_taylor", threshold=0.1))`, or without a pipeline:
`model.cache_policy = build_policy(config)`, `policy.begin(n)`, then `policy.set_step(i)` before each call.
"""

from .config import POLICIES, CacheConfig, build_policy
from .fbcache import FirstBlockCache
from .firstblock_taylor import FirstBlockTaylor
from .pipeline_mixin import CacheMixin
from .policy import CachePolicy, CacheStats
from .sortblock import SortBlock
from .taylor import TaylorCache
from .teablockcache import TeaBlockCache
from .teacache import TeaCache

__all__ = [
    "POLICIES",
    "CacheConfig",
    "CacheMixin",
    "CachePolicy",
    "CacheStats",
    "FirstBlockCache",
    "FirstBlockTaylor",
    "SortBlock",
    "TaylorCache",
    "TeaBlockCache",
    "TeaCache",
    "build_policy",
]
