"""The Meta RM's own errors (meta_rm never imports the server); the server maps each to its error tree.

MetaRMError                    (base)
├── MetaRMConfigError          bad settings, missing files or packages      -> server ConfigurationError
└── MetaRMBackendError         the model or remote pooling server failed    -> server BackendError
    └── MetaRMUnavailableError not started, unreachable, or engine dead     -> server BackendUnavailableError
"""

from __future__ import annotations


class MetaRMError(Exception):
    """Base class of every error raised by `meta_rm`."""


class MetaRMConfigError(MetaRMError):
    """The settings name something that cannot work: no model path, a missing folder, a missing package."""


class MetaRMBackendError(MetaRMError):
    """Scoring failed in the model or the remote server."""


class MetaRMUnavailableError(MetaRMBackendError):
    """The Meta RM cannot score now: not started, unreachable, or its engine died."""
