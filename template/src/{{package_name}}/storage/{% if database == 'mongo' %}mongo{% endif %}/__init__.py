"""MongoDB backend: PyMongo's async API; indexes are created at start-up."""

from .database import MongoDatabase, open_database
from .indexes import INDEXES, ensure_indexes

__all__ = ["INDEXES", "MongoDatabase", "ensure_indexes", "open_database"]
