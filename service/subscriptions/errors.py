"""Every error of webhook subscriptions, under one base class.

```
SubscriptionError
├── DesiredStateError   the desired webhook cannot be worked out from the settings and rules
├── OwnershipError      a public URL, intake path or deployment name cannot make a subscriber URL
├── SecretStoreError    no encryption key, or a stored secret that will not decrypt
├── LockBusyError       another process kept the webhooks lock longer than we would wait
├── PropagationError    a live intake replica did not load the store's version in time
├── RotationError       a rotation could not be done (no webhook yet) or finished
└── PingError           a test delivery could not be asked for
```

Callers catch ``SubscriptionError``; Cal.com's own failures stay ``ToolError`` and Redis'
``RedisError``.
"""

from __future__ import annotations


class SubscriptionError(Exception):
    """Base class of every webhook-subscription error."""


class DesiredStateError(SubscriptionError, ValueError):
    """The desired webhook cannot be worked out from the settings and rules."""


class OwnershipError(SubscriptionError, ValueError):
    """A public URL, intake path or deployment name cannot make a subscriber URL."""


class SecretStoreError(SubscriptionError):
    """The store cannot be used: no encryption key, or a record that will not decrypt."""


class LockBusyError(SubscriptionError):
    """Another process kept the webhooks lock longer than we were willing to wait."""


class PropagationError(SubscriptionError):
    """A live replica did not load the store's version in time."""


class RotationError(SubscriptionError):
    """The rotation could not be done (no webhook yet) or could not be finished."""


class PingError(SubscriptionError):
    """The test delivery could not be asked for."""
