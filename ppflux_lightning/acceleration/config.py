"""`CacheConfig` (method name, threshold, method options) and `build_policy`, the registry of cache methods."""

from .fbcache import FirstBlockCache
from .firstblock_taylor import FirstBlockTaylor
from .sortblock import SortBlock
from .teablockcache import TeaBlockCache
from .teacache import TeaCache

POLICIES = {cls.name: cls for cls in (TeaBlockCache, FirstBlockTaylor, SortBlock, TeaCache, FirstBlockCache)}


class CacheConfig:
    """`CacheConfig(method, threshold=None, **method_options)`; threshold None takes the method's default and 0 means
    never reuse. Validated on construction (unknown method or option, negative threshold -> ValueError)."""

    def __init__(self, method, threshold=None, **options):
        if method not in POLICIES:
            raise ValueError(f"unknown cache method {method!r}; valid methods: {sorted(POLICIES)}")
        self.method = method
        self.options = dict(options)
        self.threshold = threshold
        self.threshold = build_policy(self).threshold

    def to_dict(self):
        return {"method": self.method, "threshold": self.threshold, **self.options}

    def __repr__(self):
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"CacheConfig({self.method!r}, threshold={self.threshold}{opts})"


def build_policy(config):
    """A fresh policy for a `CacheConfig` (or a method name with its defaults)."""
    if isinstance(config, str):
        config = CacheConfig(config)
    if not isinstance(config, CacheConfig):
        raise TypeError(f"expected a CacheConfig or a method name, got {type(config).__name__}")
    return POLICIES[config.method](config.threshold, **config.options)
