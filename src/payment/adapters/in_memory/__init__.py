"""The domain's ports in memory: for unit tests and the contract tests."""

from payment.adapters.in_memory.unit_of_work import InMemoryStore, InMemoryUnitOfWork

__all__ = ["InMemoryStore", "InMemoryUnitOfWork"]
