"""Cache-policy methods shared by pipelines (enable_cache / disable_cache)."""

from .config import CacheConfig, build_policy


class CacheMixin:
    """For pipelines with `self.transformer`: the installed policy is the transformer's `cache_policy`; the pipeline
    calls its `begin(n)` before the denoising loop and `set_step(i)` before each transformer call."""

    def enable_cache(self, config, threshold=None, **options):
        """Install a fresh policy from a `CacheConfig`, or from a method name with threshold and options."""
        if isinstance(config, CacheConfig):
            if threshold is not None or options:
                raise TypeError("pass either a CacheConfig or a method name with threshold/options, not both")
        else:
            config = CacheConfig(config, threshold, **options)
        policy = build_policy(config)
        self.transformer.cache_policy = policy
        return policy

    def disable_cache(self):
        self.transformer.cache_policy = None

    @property
    def cache_policy(self):
        return getattr(self.transformer, "cache_policy", None)
