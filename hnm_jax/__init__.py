"""hnm_jax: bi-encoders for fine-grained matching, trained with hard-negative mining in JAX.

`hnm_jax.load_encoder` is imported lazily so that light modules (e.g. hnm_jax.data.beir) do not pull in jax.
"""

__all__ = ["Encoder", "load_encoder"]


def __getattr__(name: str):
    if name in __all__:
        from hnm_jax.models import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'hnm_jax' has no attribute {name!r}")
