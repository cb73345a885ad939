"""The Meta RM: a scalar model that rates each sampled judgment so only the best k_meta vote (never imports the server)."""

from meta_rm.errors import MetaRMBackendError, MetaRMConfigError, MetaRMError, MetaRMUnavailableError
from meta_rm.protocol import MetaRM, MetaRMInput

__all__ = ["MetaRM", "MetaRMBackendError", "MetaRMConfigError", "MetaRMError", "MetaRMInput", "MetaRMUnavailableError"]
