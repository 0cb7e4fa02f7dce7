"""prodstack CrossGuard pack: rules in ``policies.rules``, the pack in ``__main__``."""
