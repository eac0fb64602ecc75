"""Collections: faiss indexes, grouping of duplicates, retrieval, dedup of a folder or CSV."""
